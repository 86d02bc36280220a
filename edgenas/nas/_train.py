"""Supernet training: the sandwich rule with in-place distillation, checkpointed every epoch.

Runs on one process or data-parallel over torch.distributed (``torchrun``; see
:class:`_DataParallel`). Each step trains the largest subnet (at the largest resolution)
on the labels, then the smallest and ``n_random`` random subnets (each at its own
resolution) on the largest's soft targets with :func:`edgenas.distill.distillation_loss`,
and takes one optimiser step on the summed gradients (Yu et al., BigNAS / "universally
slimmable networks"). The recipe: SGD with Nesterov momentum, linear warm-up then cosine
decay, label smoothing on the largest subnet's labels, the data set's augmentation
(:func:`edgenas.data.resolve_augment`). It runs on an :class:`~edgenas.accelerator.Accelerator`
(channels_last on CPU and CUDA, mixed precision on CUDA).

After every epoch the largest and the smallest subnet are scored on the validation split
(BN recalibrated, as the search scores subnets), so the history holds the training curves.
The checkpoint (weights, optimiser, scheduler, history) is replaced atomically after every
epoch; a killed training resumes from it. Random choices come from generators seeded by
(seed, epoch), so a resumed run follows the same path as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edgenas.accelerator import Accelerator
from edgenas.config import TrainConfig
from edgenas.data import Splits, batches
from edgenas.distill import cosine_schedule, distillation_loss, make_optimizer
from edgenas.io import atomic_write_bytes
from edgenas.nas._evaluate import SubnetEvaluator
from edgenas.progress import progress as progress_bar
from edgenas.search_spaces import Space, Supernet

__all__ = ["TrainConfig", "load_supernet", "set_threads", "train_supernet"]


# Settings that change where or how fast the training runs, not what it computes: a
# checkpoint may be resumed with other values of these.
_RUNTIME_KEYS = ("epochs", "threads", "device")


def set_threads(threads: int) -> int:
    """Use ``threads`` torch threads (0: every core) and return the number set."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def _resize(x: torch.Tensor, resolution: int, accel: Accelerator) -> torch.Tensor:
    if x.shape[-1] == resolution:
        return x
    return accel.tensor(
        F.interpolate(
            x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=resolution < x.shape[-1]
        )
    )


def _checkpoint_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


class _DataParallel:
    """Data parallelism over torch.distributed (gloo on CPU), as DDP does it, for the sandwich rule.

    Launched with ``torchrun --nproc_per_node N`` (one machine) or ``--nnodes`` (several):
    every rank sees the same arch samples and its own share of each global batch; after the
    step's backward passes the gradients are averaged with one all-reduce of a flat buffer,
    so all replicas apply the same update. (DDP's per-backward hooks do not fit several
    forward/backward passes over different subnets per step; this is the same algorithm.)
    On CUDA each process takes the GPU of its ``LOCAL_RANK`` and the group speaks NCCL.
    """

    def __init__(self, device: str) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.accel = Accelerator.create(device)
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if distributed and self.accel.device.type == "cuda" and device in ("auto", "cuda"):
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            self.accel = Accelerator.create(f"cuda:{local}")
        if not dist.is_initialized() and distributed:
            dist.init_process_group("nccl" if self.accel.device.type == "cuda" else "gloo")
        self.on = dist.is_initialized()
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x[self.rank :: self.world], y[self.rank :: self.world]) if self.on else (x, y)

    def broadcast(self, module: nn.Module) -> None:
        if self.on:
            for t in list(module.parameters()) + list(module.buffers()):
                self.dist.broadcast(t.data, 0)

    def average_gradients(self, module: nn.Module) -> None:
        if not self.on:
            return
        params = list(module.parameters())
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        self.dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p))
            offset += n

    def average_buffers(self, module: nn.Module) -> None:
        """BN running statistics differ per shard: average them before a checkpoint."""
        if self.on:
            for b in module.buffers():
                if b.is_floating_point():
                    self.dist.all_reduce(b.data)
                    b.data /= self.world

    def checksums(self, module: nn.Module) -> list[float]:
        """Every replica's parameter checksum (equal when the replicas are in sync)."""
        total = sum(float(p.detach().double().sum()) for p in module.parameters())
        local = torch.tensor([total], dtype=torch.float64, device=self.accel.device)
        if not self.on:
            return [float(local)]
        out = [torch.zeros_like(local) for _ in range(self.world)]
        self.dist.all_gather(out, local)
        return [float(t) for t in out]


def load_supernet(space: Space, checkpoint: str | os.PathLike) -> Supernet:
    """The trained supernet stored in a checkpoint written by :func:`train_supernet`."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"supernet checkpoint {str(path)!r} does not exist; train it first (edgenas train)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("space") != space.to_dict():
        raise ValueError(f"checkpoint {str(path)!r} was trained for another space than {space.name!r}")
    net = Supernet(space)
    net.load_state_dict(state["model"])
    return net.eval()


def _sandwich_step(
    net: Supernet,
    x: torch.Tensor,
    y: torch.Tensor,
    students: list,
    largest,
    config: TrainConfig,
    accel: Accelerator,
    scale: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of the largest subnet on the labels and of each student on its soft targets.

    ``scale`` is the gradient scaler's (identity unless fp16). Returns (largest's loss,
    students' mean loss) as device tensors: reading them would make the host wait for the
    device every step.
    """
    with accel.autocast():
        logits = net(_resize(x, largest.resolution, accel), largest)
    loss_big = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
    scale(loss_big).backward()
    soft = logits.detach()
    loss_small = torch.zeros((), device=x.device)
    for arch in students:
        with accel.autocast():
            out = net(_resize(x, arch.resolution, accel), arch)
        loss = distillation_loss(
            out, soft, y, temperature=config.temperature, alpha=config.alpha, label_smoothing=config.label_smoothing
        )
        scale(loss).backward()
        loss_small += loss.detach() / len(students)
    return loss_big.detach(), loss_small


def train_supernet(
    space: Space,
    splits: Splits,
    config: TrainConfig,
    checkpoint: str | os.PathLike,
    *,
    augment: tuple[str, ...] = (),
    progress: bool = True,
    on_epoch: Callable[[dict, Supernet], dict | None] | None = None,
) -> tuple[Supernet, list[dict]]:
    """Train (or resume training) the supernet of ``space``; returns it (on the CPU) and the per-epoch history.

    ``augment``: the training images' augmentation (:func:`edgenas.data.resolve_augment`).
    ``on_epoch(row, supernet)``, if given, runs after each epoch with that epoch's history
    row (losses, speed, validation scores) before the checkpoint is written, e.g. to score
    subnets on another split; a dict it returns joins the row.
    """
    if space.num_classes != splits.num_classes:
        raise ValueError(
            f"space {space.name!r} has num_classes={space.num_classes}, the data has {splits.num_classes} classes"
        )
    dp = _DataParallel(config.device)
    accel = dp.accel
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    net = Supernet(space)
    n = len(splits.train.labels)
    steps = max(1, n // config.batch_size)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    history: list[dict] = []
    path = Path(checkpoint)
    cfg = {**dataclasses.asdict(config), "augment": list(augment)}
    state = None
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("space") != space.to_dict():
            raise ValueError(f"checkpoint {str(path)!r} belongs to another space; remove it or use another path")
        old = {k: v for k, v in state["config"].items() if k not in _RUNTIME_KEYS}
        new = {k: v for k, v in cfg.items() if k not in _RUNTIME_KEYS}
        if old != new:
            diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            changes = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in diff)
            raise ValueError(
                f"checkpoint {str(path)!r} was trained with other settings ({changes}); remove it or use another path"
            )
        net.load_state_dict(state["model"])
        history = state["history"]
    accel.module(net)
    opt = make_optimizer(net, config.lr, config.momentum, config.weight_decay)
    sched = cosine_schedule(opt, steps * config.epochs, round(config.warmup_epochs * steps))
    scaler = accel.grad_scaler()
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
    dp.broadcast(net)  # identical replicas to start from

    largest, smallest = space.largest(), space.smallest()
    for epoch in range(len(history), config.epochs):
        net.train()
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 1000 + epoch)
        sums = torch.zeros(2, device=accel.device)
        seen, start = 0, time.time()
        it = batches(
            splits.train,
            batch_size=config.batch_size,
            resolution=splits.train.size,
            channels=space.in_chs,
            mean=splits.mean,
            std=splits.std,
            shuffle=True,
            rng=rng,
            drop_last=True,
            limit=steps,
            augment=augment,
            accel=accel,
        )
        bar = progress_bar(
            it,
            total=steps,
            desc=f"supernet {epoch + 1}/{config.epochs}",
            unit="step",
            disable=not progress or bool(dp.rank),
        )
        for k, (x, y) in enumerate(bar):
            x, y = dp.shard(x, y)
            opt.zero_grad(set_to_none=True)
            students = [smallest] + [space.sample(rng) for _ in range(config.n_random)]
            losses = _sandwich_step(net, x, y, students, largest, config, accel, scaler.scale)
            dp.average_gradients(net)
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            sums += torch.stack(losses)
            seen += len(y) * dp.world
            if k % 10 == 9:  # reading the losses waits for the device: not every step
                avg = (sums / (k + 1)).tolist()
                bar.set_postfix(loss=f"{avg[0]:.3f}", kd=f"{avg[1]:.3f}", img_s=f"{seen / (time.time() - start):.0f}")
        seconds = time.time() - start
        dp.average_buffers(net)
        loss_largest, loss_students = (sums / steps).tolist()
        row = {
            "epoch": epoch + 1,
            "loss_largest": loss_largest,
            "loss_students": loss_students,
            "seconds": seconds,
            "images_per_second": seen / seconds,
            "lr_end": float(sched.get_last_lr()[0]),
            "world_size": dp.world,
            "replica_checksums": dp.checksums(net),
            "compute": accel.describe(),
        }
        row.update(_score_extremes(net, splits, accel, config.seed))
        if on_epoch is not None:
            row.update(on_epoch(dict(row), net) or {})
            net.train()
        history.append(row)
        if dp.rank == 0:  # one writer; every rank holds the same weights
            state = {
                "space": space.to_dict(),
                "config": cfg,
                "model": _cpu_state(net),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "history": history,
            }
            atomic_write_bytes(path, _checkpoint_bytes(state))
        if progress and not dp.rank:
            tqdm.write(
                f"supernet {epoch + 1}/{config.epochs}: loss {loss_largest:.3f}, students {loss_students:.3f}, "
                f"val largest {row['val_largest']:.4f}, smallest {row['val_smallest']:.4f}, "
                f"{row['images_per_second']:.0f} images/s on {accel.describe()['device']}"
            )
    net.to(device="cpu", memory_format=torch.contiguous_format)
    return net.eval(), history


def _cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The weights as CPU tensors in NCHW, so a checkpoint loads on any machine."""
    return {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}


def _score_extremes(net: Supernet, splits: Splits, accel: Accelerator, seed: int) -> dict[str, float]:
    """Validation accuracy of the largest and smallest subnets, BN recalibrated as the search does it."""
    evaluator = SubnetEvaluator(net, splits, calib_batches=8, seed=seed, accel=accel.fp32())
    space = net.space
    scores = {"val_largest": evaluator(space.largest()), "val_smallest": evaluator(space.smallest())}
    net.train()
    return scores
