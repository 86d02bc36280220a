"""Supernet training across two processes with torch.distributed (gloo), launched by torchrun."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from edgenas.search_spaces import SPACES, Supernet


@pytest.mark.slow
def test_two_process_training_keeps_replicas_in_sync(tmp_path):
    run = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(run),
                "space": "tiny",
                "data": {"name": "digits"},
                "train": {"epochs": 2, "batch_size": 64, "threads": 1},
            }
        )
    )
    torchrun = shutil.which("torchrun") or str(__import__("pathlib").Path(sys.executable).parent / "torchrun")
    r = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "edgenas.cli", "train", "--config", str(cfg), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    state = torch.load(run / "supernet.pt", weights_only=False)
    assert len(state["history"]) == 2
    for epoch in state["history"]:
        assert epoch["world_size"] == 2
        a, b = epoch["replica_checksums"]
        assert a == pytest.approx(b, rel=1e-9)  # both replicas hold the same weights
    reference = Supernet(SPACES["tiny"]).state_dict()
    assert {k: tuple(v.shape) for k, v in state["model"].items()} == {k: tuple(v.shape) for k, v in reference.items()}
    assert state["history"][-1]["loss_largest"] < state["history"][0]["loss_largest"]

    # the same training in one process: two replicas learn what one process learns (not
    # bit for bit: BatchNorm normalises each replica's half of the batch on its own)
    from edgenas import pipeline
    from edgenas.config import load_config

    single = yaml.safe_load(cfg.read_text())
    single["run_dir"] = str(tmp_path / "single")
    (tmp_path / "single.yaml").write_text(yaml.safe_dump(single))
    _, history = pipeline.train(load_config(tmp_path / "single.yaml"), progress=False)
    for key in ("val_largest", "val_smallest"):
        one, two = history[-1][key], state["history"][-1][key]
        assert one > 0.25 and abs(one - two) < 0.1, (key, one, two)  # chance: 0.1
