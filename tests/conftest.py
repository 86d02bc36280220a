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
    """A real fp32 table of the tiny space at resolution 16 on this CPU."""
    from edgenas.latency_tables import LocalBackend, Protocol, build_table

    path = tmp_path_factory.mktemp("lut") / "tiny16.json"
    build_table(tiny, LocalBackend(threads=1), path, resolutions=[16], protocol=Protocol(rounds=5), progress=False,
                drift_check=8)  # fmt: skip
    return path


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
