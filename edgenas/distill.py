"""Knowledge distillation: the loss, and the finetune loop shared by training and finalize.

The loss is Hinton et al.'s: KL divergence between temperature-softened teacher and
student distributions, times T^2 (so its gradients keep their scale as T changes), mixed
with cross-entropy on the labels: ``alpha * KD + (1 - alpha) * CE`` (the cross-entropy
optionally label-smoothed). The finetune loop decays alpha linearly from ``alpha_start``
to ``alpha_end`` (lean on the teacher early, on the labels late), warms the learning rate
up linearly and then decays it on a cosine, and runs on an
:class:`~edgenas.accelerator.Accelerator` (channels_last on the CPU, AMP on CUDA).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.accelerator import Accelerator, on_device
from edgenas.config import FitConfig
from edgenas.data import Splits, batches
from edgenas.progress import progress as progress_bar

__all__ = ["FitConfig", "cosine_schedule", "distillation_loss", "fit", "make_optimizer"]


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
        return 0.5 * (1 + np.cos(np.pi * min(step - warm, total - warm) / (total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


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
) -> list[dict]:
    """Train ``model`` on ``splits.train`` (distilling from ``teacher`` if given); returns per-epoch stats.

    Runs on ``accel`` (default: the CPU in channels_last) and leaves ``model`` and
    ``teacher`` on the CPU afterwards. ``on_epoch(epoch, model)``, if given, runs after
    each epoch, the model still on the accelerator (e.g. to score and keep the best
    epoch); a dict it returns is merged into that epoch's stats.
    """
    accel = accel or Accelerator.cpu()
    n = len(splits.train.labels)
    steps = n // config.batch_size if n >= config.batch_size else 1
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    total = max(1, steps * config.epochs)
    history: list[dict] = []
    with on_device(model, accel), on_device(teacher or nn.Identity(), accel):
        opt = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
        sched = cosine_schedule(opt, total, round(config.warmup_epochs * steps))
        scaler = accel.grad_scaler()
        if teacher is not None:
            teacher.eval()
        step = 0
        for epoch in range(config.epochs):
            model.train()
            rng = np.random.default_rng([config.seed, epoch])
            losses, seen, start = [], 0, time.time()
            it = batches(
                splits.train,
                batch_size=config.batch_size,
                resolution=resolution,
                channels=channels,
                mean=splits.mean,
                std=splits.std,
                shuffle=True,
                rng=rng,
                drop_last=True,
                limit=config.max_steps_per_epoch,
                augment=config.augment,
                accel=accel,
            )
            bar = progress_bar(
                it,
                total=steps,
                desc=f"{desc} {epoch + 1}/{config.epochs}",
                unit="step",
                disable=not progress,
                leave=False,
            )
            for x, y in bar:
                alpha = config.alpha_start + (config.alpha_end - config.alpha_start) * step / max(1, total - 1)
                t_logits = None
                with accel.autocast():
                    if teacher is not None:
                        with torch.no_grad():
                            tx = (
                                x
                                if teacher_resolution in (None, resolution)
                                else accel.tensor(
                                    F.interpolate(
                                        x,
                                        size=(teacher_resolution, teacher_resolution),
                                        mode="bilinear",
                                        align_corners=False,
                                    )
                                )
                            )
                            t_logits = teacher(tx)
                    out = model(x)
                loss = distillation_loss(
                    out,
                    t_logits,
                    y,
                    temperature=config.temperature,
                    alpha=alpha,
                    label_smoothing=config.label_smoothing,
                )
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # as in supernet training
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                losses.append(loss.detach())
                seen += len(y)
                if step % 10 == 0:  # .item() waits for the device: not every step
                    bar.set_postfix(
                        loss=f"{float(torch.stack(losses[-20:]).mean()):.3f}",
                        img_s=f"{seen / (time.time() - start):.0f}",
                    )
            seconds = time.time() - start
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": float(torch.stack(losses).mean()) if losses else float("nan"),
                    "seconds": seconds,
                    "images_per_second": seen / seconds,
                }
            )
            if on_epoch is not None:
                history[-1].update(on_epoch(epoch + 1, model) or {})
    model.eval()
    return history
