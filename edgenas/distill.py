"""Knowledge distillation: the loss, and the finetune loop shared by training and finalize.

The loss is Hinton et al.'s: KL divergence between temperature-softened teacher and
student distributions, times T^2 (so its gradients keep their scale as T changes), mixed
with cross-entropy on the labels: ``alpha * KD + (1 - alpha) * CE``. The finetune loop
decays alpha linearly from ``alpha_start`` to ``alpha_end`` (lean on the teacher early,
on the labels late).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edgenas.data import Splits, batches

__all__ = ["FitConfig", "cosine_schedule", "distillation_loss", "fit", "make_optimizer"]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, targets)``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ce = F.cross_entropy(student_logits, targets)
    if teacher_logits is None or alpha == 0.0:
        return ce
    t = temperature
    kd = F.kl_div(
        F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits.detach() / t, dim=1), reduction="batchmean"
    )
    return alpha * kd * t * t + (1.0 - alpha) * ce


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; no weight decay on BN parameters and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)


def cosine_schedule(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay of the learning rate to zero over ``total_steps`` optimiser steps."""
    total = max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))


@dataclass(frozen=True)
class FitConfig:
    """A finetune (or a stand-alone training when there is no teacher)."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    temperature: float = 4.0
    alpha_start: float = 0.7
    alpha_end: float = 0.3
    seed: int = 0
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"fit needs epochs >= 0, batch_size >= 1, lr > 0: {self}")


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
) -> list[dict]:
    """Train ``model`` on ``splits.train`` (distilling from ``teacher`` if given); returns per-epoch stats.

    ``on_epoch(epoch, model)``, if given, runs after each epoch (e.g. to score and keep the
    best epoch); a dict it returns is merged into that epoch's stats.
    """
    opt = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    n = len(splits.train.labels)
    steps = n // config.batch_size if n >= config.batch_size else 1
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    total = max(1, steps * config.epochs)
    sched = cosine_schedule(opt, total)
    if teacher is not None:
        teacher.eval()
    history, step = [], 0
    for epoch in range(config.epochs):
        model.train()
        rng = np.random.default_rng([config.seed, epoch])
        losses, seen, start = [], 0, time.time()
        it = batches(splits.train, batch_size=config.batch_size, resolution=resolution, channels=channels,
                     mean=splits.mean, std=splits.std, shuffle=True, rng=rng, drop_last=True,
                     limit=config.max_steps_per_epoch)  # fmt: skip
        bar = tqdm(it, total=steps, desc=f"{desc} {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for x, y in bar:
            alpha = config.alpha_start + (config.alpha_end - config.alpha_start) * step / max(1, total - 1)
            t_logits = None
            if teacher is not None:
                with torch.no_grad():
                    tx = x if teacher_resolution in (None, resolution) else F.interpolate(
                        x, size=(teacher_resolution, teacher_resolution), mode="bilinear", align_corners=False
                    )  # fmt: skip
                    t_logits = teacher(tx)
            loss = distillation_loss(model(x), t_logits, y, temperature=config.temperature, alpha=alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # as in supernet training
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            seen += len(y)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", img_s=f"{seen / (time.time() - start):.0f}")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                        "seconds": time.time() - start})  # fmt: skip
        if on_epoch is not None:
            history[-1].update(on_epoch(epoch + 1, model) or {})
    model.eval()
    return history
