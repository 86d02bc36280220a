"""Knowledge distillation: the loss, and the finetune loop shared by training and finalize.

The loss is Hinton et al.'s: KL divergence between temperature-softened teacher and
student distributions, times T^2 (so its gradients keep their scale as T changes), mixed
with cross-entropy on the labels: ``alpha * KD + (1 - alpha) * CE`` (the cross-entropy
optionally label-smoothed). The finetune loop decays alpha linearly from ``alpha_start``
to ``alpha_end`` (lean on the teacher early, on the labels late), warms the learning rate
up linearly and then decays it on a cosine, and runs on an
:class:`~edgenas.accelerator.Accelerator` (channels_last on the CPU, AMP on CUDA). Given an
:class:`EpochCheckpoint`, it keeps its state after every epoch and a killed finetune resumes at
its last finished epoch, on the same path as an uninterrupted one (every epoch's batches are
drawn from a generator seeded by the seed and the epoch).
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.accelerator import Accelerator, on_device
from edgenas.config import FitConfig, Recipe
from edgenas.data import Splits, batches
from edgenas.io import atomic_write_bytes
from edgenas.progress import progress as progress_bar

logger = logging.getLogger(__name__)

__all__ = [
    "EpochCheckpoint",
    "FitConfig",
    "atomic_torch_save",
    "clean_teacher_logits",
    "Optimization",
    "cosine_schedule",
    "distillation_loss",
    "epoch_batches",
    "fit",
    "make_optimizer",
    "resize",
    "steps_per_epoch",
    "train_epoch",
]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 0.7,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, targets)``.

    Computed in fp32 whatever the autocast dtype of the logits (softmax at T in fp16 loses
    the small probabilities that distillation is about).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    student_logits = student_logits.float()
    ce = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if teacher_logits is None or alpha == 0.0:
        return ce
    t = temperature
    kd = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.softmax(teacher_logits.detach().float() / t, dim=1),
        reduction="batchmean",
    )
    return alpha * kd * t * t + (1.0 - alpha) * ce


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; no weight decay on BN parameters and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)


def cosine_schedule(
    opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then cosine decay to zero by ``total_steps``."""
    total = max(1, total_steps)
    warm = min(max(0, warmup_steps), total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        # a Python float: the schedule's state goes into checkpoints loaded with weights_only=True
        return float(0.5 * (1 + np.cos(np.pi * min(step - warm, total - warm) / (total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def resize(x: torch.Tensor, resolution: int, accel: Accelerator) -> torch.Tensor:
    """A batch at ``resolution`` (bilinear; antialiased when it shrinks, so a smaller input is not aliased)."""
    if x.shape[-1] == resolution:
        return x
    shrink = resolution < x.shape[-1]
    y = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)
    return accel.tensor(y)


class Optimization:
    """One recipe's optimiser, schedule and gradient scaler: what every training step ends with.

    ``backward(loss)`` scales (fp16) and back-propagates; ``step()`` unscales, clips the
    gradient norm at 5 (as the supernet always did), steps the optimiser and the warm-up +
    cosine schedule. Its state checkpoints with :meth:`state_dict`.
    """

    def __init__(self, model: nn.Module, recipe: Recipe, *, total_steps: int, warmup_steps: int, accel: Accelerator):
        self.params = list(model.parameters())
        self.opt = make_optimizer(model, recipe.lr, recipe.momentum, recipe.weight_decay)
        self.sched = cosine_schedule(self.opt, total_steps, warmup_steps)
        self.scaler = accel.grad_scaler()

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()

    @property
    def lr(self) -> float:
        return float(self.sched.get_last_lr()[0])

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def steps_per_epoch(splits: Splits, recipe: Recipe) -> int:
    """Full batches in the training split (at least one), capped by ``max_steps_per_epoch``."""
    steps = max(1, len(splits.train.labels) // recipe.batch_size)
    return min(steps, recipe.max_steps_per_epoch) if recipe.max_steps_per_epoch else steps


def epoch_batches(
    splits: Splits,
    recipe: Recipe,
    epoch: int,
    *,
    resolution: int,
    channels: int,
    augment: tuple[str, ...],
    accel: Accelerator,
    rng: np.random.Generator | None = None,
    indices: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """An epoch of shuffled, augmented training batches, the same for a given (seed, epoch) on every device.

    ``rng`` (default: seeded by the recipe's seed and ``epoch``) shuffles and augments; a
    caller that draws more from the same generator (the supernet's students) passes its own.
    ``indices``: each batch also gives its images' positions in the training split.
    """
    return batches(
        splits.train,
        batch_size=recipe.batch_size,
        resolution=resolution,
        channels=channels,
        mean=splits.mean,
        std=splits.std,
        shuffle=True,
        rng=rng if rng is not None else np.random.default_rng([recipe.seed, epoch]),
        drop_last=True,
        limit=steps_per_epoch(splits, recipe),
        augment=augment,
        accel=accel,
        indices=indices,
    )


def clean_teacher_logits(
    teacher: nn.Module,
    splits: Splits,
    *,
    resolution: int,
    channels: int,
    batch_size: int,
    accel: Accelerator,
    progress: bool = True,
) -> torch.Tensor:
    """The teacher's logits for every training image, un-augmented, at its ``resolution``: (images, classes)
    float32 on ``accel``'s device (4 bytes per image and class; an image that cannot be read keeps zeros).
    A pass of the teacher over the training split: a minute on 2 CPU cores for Fashion-MNIST, so it shows
    its progress."""
    n = len(splits.train.labels)
    logits = torch.zeros(n, splits.num_classes, device=accel.device)
    data = batches(
        splits.train,
        batch_size=batch_size,
        resolution=resolution,
        channels=channels,
        mean=splits.mean,
        std=splits.std,
        accel=accel,
        indices=True,
    )
    teacher.eval()
    total = -(-n // batch_size)
    bar = progress_bar(data, total=total, desc="teacher logits", unit="step", disable=not progress, leave=False)
    with torch.no_grad(), accel.autocast(), bar:
        for x, _, idx in bar:
            logits[idx] = teacher(x).float()
    return logits


def train_epoch(
    step: Callable[..., tuple[torch.Tensor, int]],
    data: Iterable[tuple[torch.Tensor, ...]],
    *,
    total: int,
    desc: str,
    names: tuple[str, ...] = ("loss",),
    progress: bool = True,
) -> tuple[list[float], int, float]:
    """Run ``step(*batch) -> (losses, images)`` over the batches of ``data``: (mean of each loss, images
    seen, seconds).

    ``losses`` is a device tensor with one value per name; it is read every tenth step only
    (reading waits for the device), for the progress bar's figures.
    """
    sums, seen, count, start = None, 0, 0, time.time()
    bar = progress_bar(data, total=total, desc=desc, unit="step", disable=not progress, leave=False)
    for k, batch in enumerate(bar):
        losses, images = step(*batch)
        sums = losses if sums is None else sums + losses
        seen, count = seen + images, count + 1
        if k % 10 == 9:
            avg = (sums / (k + 1)).tolist()
            figures = {n: f"{v:.3f}" for n, v in zip(names, avg)}
            bar.set_postfix(**figures, img_s=f"{seen / (time.time() - start):.0f}")
    seconds = time.time() - start
    means = (sums / count).tolist() if sums is not None else [float("nan")] * len(names)
    return means, seen, seconds


def fit(
    model: nn.Module,
    splits: Splits,
    config: FitConfig,
    *,
    resolution: int,
    channels: int,
    teacher: nn.Module | None = None,
    teacher_resolution: int | None = None,
    progress: bool = True,
    desc: str = "fit",
    on_epoch: Callable[[int, nn.Module], dict | None] | None = None,
    accel: Accelerator | None = None,
    clean_logits: torch.Tensor | None = None,
    checkpoint: EpochCheckpoint | None = None,
) -> list[dict]:
    """Train ``model`` on ``splits.train`` (distilling from ``teacher`` if given); returns per-epoch stats.

    Runs on ``accel`` (default: the CPU in channels_last) and leaves ``model`` and
    ``teacher`` on the CPU afterwards. ``on_epoch(epoch, model)``, if given, runs after
    each epoch, the model still on the accelerator (e.g. to score and keep the best
    epoch); a dict it returns is merged into that epoch's stats. ``config.teacher_logits``
    "clean": the teacher runs once over the un-augmented training images, before the first
    epoch, instead of on every batch; ``clean_logits``, if given, are those logits
    (:func:`clean_teacher_logits` of this teacher), so that several finetunes by one teacher
    compute them once. ``checkpoint``: the state after every epoch, ``on_epoch``'s included
    where it has ``state_dict``/``load_state_dict``; a run that finds one of its own resumes
    after its last epoch (the caller removes it once the result is kept).
    """
    accel = accel or Accelerator.cpu()
    steps = steps_per_epoch(splits, config)
    total = max(1, steps * config.epochs)
    if not (config.alpha_start or config.alpha_end):
        teacher = None  # alpha 0 throughout: the labels alone, the teacher's forward pass saved
    t_res = teacher_resolution or resolution
    with on_device(model, accel), on_device(teacher or nn.Identity(), accel):
        optim = Optimization(
            model, config, total_steps=total, warmup_steps=round(config.warmup_epochs * steps), accel=accel
        )
        history = checkpoint.resume(model, optim, on_epoch) if checkpoint is not None else []
        cached = None
        if teacher is not None and config.teacher_logits == "clean" and len(history) < config.epochs:
            cached = _clean_logits_on(
                accel, clean_logits, teacher, splits, config, resolution=t_res, channels=channels, progress=progress
            )
        step = _distill_step(model, teacher, t_res, config, optim, accel, total, done=len(history) * steps)
        for epoch in range(len(history), config.epochs):
            model.train()
            data = _fit_batches(splits, config, epoch, cached, resolution=resolution, channels=channels, accel=accel)
            (loss,), seen, seconds = train_epoch(
                step, data, total=steps, desc=f"{desc} {epoch + 1}/{config.epochs}", progress=progress
            )
            history.append({"epoch": epoch + 1, "loss": loss, "seconds": seconds, "images_per_second": seen / seconds})
            if on_epoch is not None:
                history[-1].update(on_epoch(epoch + 1, model) or {})
            if checkpoint is not None:
                checkpoint.save(model, optim, history, on_epoch)
    model.eval()
    return history


def _clean_logits_on(
    accel: Accelerator,
    given: torch.Tensor | None,
    teacher: nn.Module,
    splits: Splits,
    config: FitConfig,
    *,
    resolution: int,
    channels: int,
    progress: bool,
) -> torch.Tensor:
    """The teacher's clean logits on ``accel``'s device: ``given``, or computed now."""
    if given is None:
        given = clean_teacher_logits(
            teacher,
            splits,
            resolution=resolution,
            channels=channels,
            batch_size=config.batch_size,
            accel=accel,
            progress=progress,
        )
    return given.to(accel.device)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` written atomically: a kill never leaves a torn file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


@dataclass(frozen=True)
class EpochCheckpoint:
    """Where :func:`fit` keeps its state after every epoch, and the key of the inputs it trains from.

    A checkpoint with another key was made from other inputs (another arch, teacher or
    recipe): it is never resumed, and the first epoch of the new run replaces it.
    """

    path: Path
    key: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str is welcome

    def save(self, model: nn.Module, optim: Optimization, history: list[dict], on_epoch: Any = None) -> None:
        state = {"key": self.key, "model": model.state_dict(), "optimization": optim.state_dict(), "history": history}
        if hasattr(on_epoch, "state_dict"):
            state["on_epoch"] = on_epoch.state_dict()
        atomic_torch_save(state, self.path)

    def resume(self, model: nn.Module, optim: Optimization, on_epoch: Any = None) -> list[dict]:
        """The stats of the epochs already done, their state loaded into ``model``, ``optim`` and
        ``on_epoch``; an empty list where there is nothing of this run's to resume."""
        state = self._load()
        if state is None:
            return []
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimization"])
        if "on_epoch" in state and hasattr(on_epoch, "load_state_dict"):
            on_epoch.load_state_dict(state["on_epoch"])
        logger.info(f"{self.path}: resuming after epoch {len(state['history'])}")
        return list(state["history"])

    def _load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            ours = state["key"] == self.key
        except Exception:  # a torn or foreign file: torch raises several types
            ours = False
        if not ours:
            logger.info(f"{self.path} was made from other inputs (or cannot be read): starting afresh")
            return None
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _fit_batches(
    splits: Splits,
    config: FitConfig,
    epoch: int,
    cached: torch.Tensor | None,
    *,
    resolution: int,
    channels: int,
    accel: Accelerator,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """An epoch's batches for :func:`fit`: (images, labels), with the teacher's logits of those images where
    ``cached`` holds them."""
    data = epoch_batches(
        splits,
        config,
        epoch,
        resolution=resolution,
        channels=channels,
        augment=config.augment,
        accel=accel,
        indices=cached is not None,
    )
    return data if cached is None else ((x, y, cached[idx]) for x, y, idx in data)


def _distill_step(
    model: nn.Module,
    teacher: nn.Module | None,
    teacher_resolution: int,
    config: FitConfig,
    optim: Optimization,
    accel: Accelerator,
    total: int,
    done: int = 0,
) -> Callable[..., tuple[torch.Tensor, int]]:
    """One optimiser step on a batch: the teacher's logits (given, or the teacher run at its resolution), the
    distillation loss with alpha decaying linearly over the whole run from ``alpha_start`` to ``alpha_end``
    (``done``: the steps a resumed run took before)."""
    if teacher is not None:
        teacher.eval()
    taken = [done]  # optimiser steps taken

    def step(x: torch.Tensor, y: torch.Tensor, t_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        alpha = config.alpha_start + (config.alpha_end - config.alpha_start) * taken[0] / max(1, total - 1)
        with accel.autocast():
            if t_logits is None and teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(resize(x, teacher_resolution, accel))
            out = model(x)
        loss = distillation_loss(
            out, t_logits, y, temperature=config.temperature, alpha=alpha, label_smoothing=config.label_smoothing
        )
        optim.zero_grad()
        optim.backward(loss)
        optim.step()
        taken[0] += 1
        return loss.detach().reshape(1), len(y)

    return step
