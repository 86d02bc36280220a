"""Shared fixtures: the tiny space and one small latency table built once per session."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    from edgenas.search_spaces import get_space

    return get_space("tiny")


@pytest.fixture(scope="session")
def tiny_table(tmp_path_factory, tiny):
    """A real, calibrated fp32 table of the whole tiny space on this CPU."""
    from edgenas.latency_tables import LocalBackend, Protocol, build_table, validate_table

    path = tmp_path_factory.mktemp("lut") / "tiny.json"
    backend = LocalBackend(threads=1)
    build_table(tiny, backend, path, protocol=Protocol(rounds=5), progress=False, drift_check=8)
    validate_table(path, backend, n=16, progress=False)
    return path


@pytest.fixture(scope="session")
def digits_splits():
    from edgenas.data import load_dataset, make_splits

    return make_splits(load_dataset("digits"), seed=0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_table):
    """A run folder with a supernet of the tiny space trained for 2 epochs on digits, and its config."""
    import yaml

    from edgenas import pipeline
    from edgenas.config import load_config

    run = tmp_path_factory.mktemp("run")
    cfg = {
        "run_dir": str(run),
        "space": "tiny",
        "data": {"name": "digits"},
        "train": {"epochs": 2, "batch_size": 64, "threads": 1},
        "search": {"n_trials": 10, "population_size": 4, "calib_batches": 2},
        "devices": [{"name": "cpu", "lut": str(tiny_table), "budget_ms": 1000.0}],
    }
    path = run / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_config(path)
    pipeline.train(config, progress=False)
    return path


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
