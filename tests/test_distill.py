"""The distillation loss against a hand computation, and the finetune loop."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from edgenas.distill import EpochCheckpoint, FitConfig, distillation_loss, fit
from edgenas.nas import accuracy
from edgenas.quant import calibrate_qat, prepare_qat
from edgenas.search_spaces import SPACES, Arch, build_subnet


def test_loss_matches_hand_computation():
    s = torch.tensor([[2.0, 0.0, -1.0]])
    t = torch.tensor([[1.0, 1.0, 0.0]])
    y = torch.tensor([0])
    T, alpha = 4.0, 0.7
    ps = [math.exp(v / T) for v in (2.0, 0.0, -1.0)]
    pt = [math.exp(v / T) for v in (1.0, 1.0, 0.0)]
    ps = [p / sum(ps) for p in ps]
    pt = [p / sum(pt) for p in pt]
    kl = sum(q * math.log(q / p) for q, p in zip(pt, ps))
    e = [math.exp(v) for v in (2.0, 0.0, -1.0)]
    ce = -math.log(e[0] / sum(e))
    expect = alpha * kl * T * T + (1 - alpha) * ce
    assert float(distillation_loss(s, t, y, temperature=T, alpha=alpha)) == pytest.approx(expect, rel=1e-5)
    assert float(distillation_loss(s, None, y)) == pytest.approx(ce, rel=1e-5)
    assert float(distillation_loss(s, t, y, alpha=0.0)) == pytest.approx(ce, rel=1e-5)
    with pytest.raises(ValueError, match="alpha must be in"):
        distillation_loss(s, t, y, alpha=1.5)


def test_fit_learns_digits(digits_splits):
    torch.manual_seed(0)
    space = SPACES["tiny"]
    net = build_subnet(space, Arch.parse("r16|k3e3|k3e3"))
    before = accuracy(net, digits_splits.val, digits_splits, resolution=16, channels=1)

    def score(epoch, model):
        return {"val": accuracy(model, digits_splits.val, digits_splits, resolution=16, channels=1)}

    hist = fit(
        net,
        digits_splits,
        FitConfig(epochs=3, batch_size=64, lr=0.1),
        resolution=16,
        channels=1,
        progress=False,
        on_epoch=score,
    )
    after = accuracy(net, digits_splits.val, digits_splits, resolution=16, channels=1)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert after > max(before, 0.5)
    assert [h["epoch"] for h in hist] == [1, 2, 3] and hist[-1]["val"] == after  # on_epoch saw each epoch


def test_alpha_zero_throughout_trains_on_the_labels_without_running_the_teacher(digits_splits):
    """The labels-only control (bench/teacher_controls.py) pays for no teacher: it is never called."""

    class Unrunnable(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("the teacher ran with alpha 0 throughout")

    config = FitConfig(epochs=1, batch_size=64, lr=0.1, alpha_start=0.0, alpha_end=0.0, max_steps_per_epoch=3)
    net = build_subnet(SPACES["tiny"], Arch.parse("r16|k3e3|k3e3"))
    hist = fit(net, digits_splits, config, teacher=Unrunnable(), resolution=16, channels=1, progress=False)
    assert len(hist) == 1 and hist[0]["loss"] > 0
    with pytest.raises(RuntimeError, match="the teacher ran"):  # and it is called whenever alpha is not 0
        fit(
            net,
            digits_splits,
            dataclasses.replace(config, alpha_end=0.1),
            teacher=Unrunnable(),
            resolution=16,
            channels=1,
            progress=False,
        )


def test_clean_teacher_logits_run_the_teacher_once_per_image_and_teach_what_it_would_online(digits_splits):
    """ "clean": the teacher sees every training image once, before the first epoch; without augmentation
    its logits are the ones it gives online, so the student ends with the same weights."""

    class Counting(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.images = net, 0

        def forward(self, x):
            self.images += len(x)
            return self.net(x)

    torch.manual_seed(0)
    teacher = Counting(build_subnet(SPACES["tiny"], Arch.parse("r16|k5e3se-k5e3|k5e3se-k5e3")).eval())
    start = build_subnet(SPACES["tiny"], Arch.parse("r16|k3e3|k3e3"))
    config = FitConfig(epochs=2, batch_size=64, lr=0.1, max_steps_per_epoch=4)
    students = {}
    for mode, augment in (("online", ()), ("clean", ()), ("clean", ("crop", "flip"))):
        net, teacher.images = copy.deepcopy(start), 0
        cfg = dataclasses.replace(config, teacher_logits=mode, augment=augment)
        fit(net, digits_splits, cfg, teacher=teacher, resolution=16, channels=1, progress=False)
        students[mode, augment] = (net, teacher.images)
    n = len(digits_splits.train.labels)
    assert students["online", ()][1] == 2 * 4 * 64  # every step's batch
    assert students["clean", ()][1] == students["clean", ("crop", "flip")][1] == n  # once per image, then never
    online, clean = (dict(students[k][0].named_parameters()) for k in (("online", ()), ("clean", ())))
    assert all(torch.allclose(online[k], clean[k], atol=1e-4) for k in online)
    augmented = dict(students["clean", ("crop", "flip")][0].named_parameters())
    assert not all(torch.allclose(online[k], augmented[k], atol=1e-4) for k in online)  # the images did differ
    with pytest.raises(ValueError, match="teacher_logits must be one of"):
        FitConfig(teacher_logits="cached")


class _Curve:
    """An ``on_epoch`` with state, as finalize's best-epoch keeper has: it sees every epoch once."""

    def __init__(self, stop_at: int | None = None):
        self.seen, self.stop_at, self.calls = [], stop_at, []

    def __call__(self, epoch, model):
        self.calls.append(epoch)  # not in its state: the epochs trained in this call
        if epoch == self.stop_at:
            raise KeyboardInterrupt  # killed after the previous epoch's checkpoint
        self.seen.append(epoch)

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


@pytest.mark.parametrize("quantized", [False, True], ids=["fp32", "qat"])
def test_a_killed_fit_resumes_after_its_last_epoch_on_the_uninterrupted_path(quantized, digits_splits, tmp_path):
    """The distillation of a full finalize takes half an hour: a kill costs at most one epoch of it
    (of QAT's too: its fake quantization's ranges are part of the state)."""
    config = FitConfig(epochs=3, batch_size=64, lr=0.1, warmup_epochs=1, alpha_start=0.7, alpha_end=0.3)
    config = dataclasses.replace(config, max_steps_per_epoch=4, teacher_logits="online")
    teacher = build_subnet(SPACES["tiny"], Arch.parse("r16|k5e3|k5e3")).eval()
    kw = dict(resolution=16, channels=1, teacher=teacher, progress=False)

    def start():
        torch.manual_seed(0)
        net = build_subnet(SPACES["tiny"], Arch.parse("r16|k3e3|k3e3"))
        return calibrate_qat(prepare_qat(net), [torch.randn(8, 1, 16, 16)]) if quantized else net

    whole = start()
    fit(whole, digits_splits, config, on_epoch=_Curve(), **kw)
    ckpt = EpochCheckpoint(str(tmp_path / "distilled.epochs.pt"), key="k1")  # a str path too
    with pytest.raises(KeyboardInterrupt):
        fit(start(), digits_splits, config, on_epoch=_Curve(stop_at=3), checkpoint=ckpt, **kw)
    resumed, curve = start(), _Curve()
    hist = fit(resumed, digits_splits, config, on_epoch=curve, checkpoint=ckpt, **kw)
    assert [h["epoch"] for h in hist] == [1, 2, 3] and curve.seen == [1, 2, 3]
    assert curve.calls == [3]  # epochs 1-2 were not trained again
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(
            a.float(), b.float(), atol=1e-5
        )  # the schedule, alpha and batches picked up where they were
    # a checkpoint made from other inputs is never resumed
    other, curve = start(), _Curve()
    fit(
        other,
        digits_splits,
        dataclasses.replace(config, epochs=1),
        on_epoch=curve,
        checkpoint=EpochCheckpoint(ckpt.path, "k2"),
        **kw,
    )
    assert curve.calls == curve.seen == [1] and torch.load(ckpt.path, weights_only=True)["key"] == "k2"
    ckpt.remove()
    assert not ckpt.path.exists()
