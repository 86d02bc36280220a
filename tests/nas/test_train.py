"""Supernet training: the loss goes down, and a killed training resumes to the same result."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from edgenas.config import load_config
from edgenas.nas import TrainConfig, load_supernet, train_supernet
from edgenas.search_spaces import SPACES


def test_training_reduces_loss_and_checkpoints(digits_splits, tmp_path):
    ckpt = tmp_path / "s.pt"
    cfg = TrainConfig(epochs=3, batch_size=64, threads=1, lr=0.1)
    net, hist = train_supernet(SPACES["tiny"], digits_splits, cfg, ckpt, progress=False)
    assert len(hist) == 3
    assert hist[-1]["loss_largest"] < hist[0]["loss_largest"]
    # The students chase soft targets that sharpen as the largest learns, so their loss need
    # not fall; what must hold is that they learn the task too.
    from edgenas.nas import SubnetEvaluator

    ev = SubnetEvaluator(net, digits_splits, calib_batches=4)
    assert ev(SPACES["tiny"].smallest()) > 0.5 and ev(SPACES["tiny"].largest()) > 0.5
    again = load_supernet(SPACES["tiny"], ckpt)
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"other settings \(batch_size: 64 there, 128 now, lr: 0.1 there, 0.2 now\)"):
        train_supernet(SPACES["tiny"], digits_splits, TrainConfig(epochs=3, lr=0.2, threads=1), ckpt, progress=False)
    with pytest.raises(ValueError, match="augment"):  # augmentation is part of what was trained
        train_supernet(SPACES["tiny"], digits_splits, cfg, ckpt, augment=("flip",), progress=False)
    # where it runs is not: a longer run on another device string resumes from the checkpoint
    longer = TrainConfig(epochs=4, batch_size=64, threads=1, lr=0.1, device="cpu")
    _, hist4 = train_supernet(SPACES["tiny"], digits_splits, longer, ckpt, progress=False)
    assert len(hist4) == 4 and hist4[:3] == hist


def test_history_holds_curves_and_the_compute_and_on_epoch_sees_each_row(digits_splits, tmp_path):
    rows = []

    def on_epoch(row, net):
        rows.append(row)
        return {"extra": row["epoch"] * 10}

    cfg = TrainConfig(epochs=3, batch_size=64, threads=1, device="cpu", warmup_epochs=0.3)
    _, hist = train_supernet(
        SPACES["tiny"], digits_splits, cfg, tmp_path / "s.pt", augment=("crop",), progress=False, on_epoch=on_epoch
    )
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [h["extra"] for h in hist] == [10, 20, 30]
    for h in hist:
        assert 0.0 <= h["val_smallest"] <= 1.0 and 0.0 <= h["val_largest"] <= 1.0
        assert h["compute"]["device"] == "cpu" and h["compute"]["channels_last"] is True
    assert hist[-1]["val_largest"] > max(0.3, hist[0]["val_largest"])  # learning (chance: 0.1)
    assert hist[0]["lr_end"] > hist[1]["lr_end"] > hist[2]["lr_end"] == 0.0  # cosine to zero


def test_a_training_starts_from_another_supernet_with_its_hidden_units_ordered(digits_splits, tmp_path):
    """Progressive shrinking's next phase: a supernet trained without the hidden-width choice starts one with it,
    computing what it computed (the largest subnet), its most important hidden units first."""
    import dataclasses

    from edgenas.nas import SubnetEvaluator
    from edgenas.nas._train import _initialise
    from edgenas.search_spaces import Supernet

    tiny = SPACES["tiny"]
    fixed = dataclasses.replace(tiny, feature_choices=())
    first = tmp_path / "first.pt"
    cfg = TrainConfig(epochs=1, batch_size=64, threads=1, max_steps_per_epoch=8)
    before, _ = train_supernet(fixed, digits_splits, cfg, first, progress=False)
    x = torch.randn(4, 1, 24, 24)
    start = TrainConfig(epochs=1, batch_size=64, threads=1, max_steps_per_epoch=8, init_from=str(first))
    net = Supernet(tiny)
    _initialise(net, str(first))
    with torch.no_grad():
        assert torch.allclose(net.eval()(x, tiny.largest()), before.eval()(x, tiny.largest()), atol=1e-5)
    norms = net.classifier.fc2.weight.abs().sum(0)
    assert torch.all(norms[:-1] >= norms[1:])  # a narrower width keeps the most important units
    second = tmp_path / "second.pt"
    after, hist = train_supernet(tiny, digits_splits, start, second, progress=False)
    assert len(hist) == 1 and SubnetEvaluator(after, digits_splits, calib_batches=2)(tiny.smallest()) > 0.2
    # the starting weights are part of what was trained: another file is another training
    torch.save({"model": before.state_dict(), "note": "changed"}, first)
    with pytest.raises(ValueError, match="other settings \\(init_from"):
        train_supernet(tiny, digits_splits, dataclasses.replace(start, epochs=2), second, progress=False)
    with pytest.raises(ValueError, match="holds another space's layers"):
        _initialise(Supernet(SPACES["small"]), str(first))
    with pytest.raises(FileNotFoundError, match="train.init_from 'nowhere.pt' does not exist"):
        train_supernet(tiny, digits_splits, dataclasses.replace(start, init_from="nowhere.pt"), tmp_path / "t.pt")


def test_wrong_class_count_is_refused(digits_splits, tmp_path):
    import dataclasses

    space = dataclasses.replace(SPACES["tiny"], num_classes=3)
    with pytest.raises(ValueError, match="num_classes=3, the data has 10 classes"):
        train_supernet(space, digits_splits, TrainConfig(epochs=1, threads=1), tmp_path / "x.pt", progress=False)


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(tmp_path):
    def config(run):
        path = tmp_path / f"{run}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "run_dir": str(tmp_path / run),
                    "space": "tiny",
                    "data": {"name": "digits"},
                    "train": {"epochs": 3, "batch_size": 64, "threads": 1},
                }
            )
        )
        return path

    # uninterrupted reference
    subprocess.run([sys.executable, "-m", "edgenas.cli", "train", "--config", str(config("a")), "--quiet"], check=True)
    # killed after its first checkpoint, then resumed
    cmd = [sys.executable, "-m", "edgenas.cli", "train", "--config", str(config("b")), "--quiet"]
    proc = subprocess.Popen(cmd)
    ckpt = tmp_path / "b" / "supernet.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = torch.load(ckpt, weights_only=False)
    assert 1 <= len(first["history"]) < 3
    subprocess.run(cmd, check=True)
    a = torch.load(tmp_path / "a" / "supernet.pt", weights_only=False)
    b = torch.load(ckpt, weights_only=False)
    assert len(b["history"]) == 3
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-5), k
    assert load_config(config("b")).train.epochs == 3
