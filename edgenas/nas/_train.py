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

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.accelerator import Accelerator, seeded
from edgenas.config import TrainConfig
from edgenas.data import Splits
from edgenas.distill import (
    Optimization,
    atomic_torch_save,
    distillation_loss,
    epoch_batches,
    resize,
    steps_per_epoch,
    train_epoch,
)
from edgenas.io import file_digest
from edgenas.nas._evaluate import SubnetEvaluator
from edgenas.search_spaces import Space, Supernet

__all__ = ["TrainConfig", "load_supernet", "sandwich_step", "set_threads", "torch_threads", "train_supernet"]

logger = logging.getLogger(__name__)


# Settings that change where or how fast the training runs, not what it computes: a
# checkpoint may be resumed with other values of these.
_RUNTIME_KEYS = ("epochs", "threads", "device")


def set_threads(threads: int) -> int:
    """Use ``threads`` torch threads (0: every core) and return the number set (a program's choice: process-wide)."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """``threads`` torch threads (0: every core) inside the block, the caller's count given back after it."""
    before = torch.get_num_threads()
    try:
        yield set_threads(threads)
    finally:
        torch.set_num_threads(before)


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
    if not _same_weights(state.get("space"), space):
        raise ValueError(f"checkpoint {str(path)!r} was trained for another space than {space.name!r}")
    net = Supernet(space)
    net.load_state_dict(state["model"])
    return net.eval()


def sandwich_step(
    net: Supernet,
    x: torch.Tensor,
    y: torch.Tensor,
    students: list,
    largest,
    config: TrainConfig,
    accel: Accelerator,
    backward: Callable[[torch.Tensor], None],
) -> torch.Tensor:
    """Forward and backward of the largest subnet on the labels and of each student on its soft targets.

    ``backward`` is the optimisation's (scaled for fp16). Returns (largest's loss, students'
    mean loss) as one device tensor: reading it would make the host wait for the device.
    """
    with accel.autocast():
        logits = net(resize(x, largest.resolution, accel), largest)
    loss_big = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
    backward(loss_big)
    soft = logits.detach()
    loss_small = torch.zeros((), device=x.device)
    for arch in students:
        with accel.autocast():
            out = net(resize(x, arch.resolution, accel), arch)
        loss = distillation_loss(
            out, soft, y, temperature=config.temperature, alpha=config.alpha, label_smoothing=config.label_smoothing
        )
        backward(loss)
        loss_small += loss.detach() / len(students)
    return torch.stack([loss_big.detach(), loss_small])


def _same_weights(stored: dict[str, Any] | None, space: Space) -> bool:
    """Whether a checkpoint's space has ``space``'s layers and choices: its name and description may differ
    (a space file that renames the built-in space it copies holds the same supernet)."""

    def layers(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in ("name", "description")}

    return stored is not None and layers(stored) == layers(space.to_dict())


def _resume(path: Path, space: Space, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one, refused when it belongs to another space or other settings."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not _same_weights(state.get("space"), space):
        raise ValueError(f"checkpoint {str(path)!r} belongs to another space; remove it or use another path")
    old = {k: v for k, v in state["config"].items() if k not in _RUNTIME_KEYS}
    new = {k: v for k, v in settings.items() if k not in _RUNTIME_KEYS}
    # a setting a checkpoint predates reads as its default (None)
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        changes = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in diff)
        raise ValueError(
            f"checkpoint {str(path)!r} was trained with other settings ({changes}); remove it or use another path"
        )
    return state


def _init_digest(path: str) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"train.init_from {path!r} does not exist; it names a supernet checkpoint to start from"
        )
    return file_digest(path)


def _initialise(net: Supernet, path: str) -> None:
    """``net`` starts from the weights of the supernet checkpoint at ``path`` (its layers must be ``net``'s).

    Where the space offers narrower classifier hidden widths, the hidden units are then ordered by
    importance, so that each narrower width shares the units that mattered most to the widest
    (Once-for-All's channel re-organisation before a new elastic dimension is trained).
    """
    state = torch.load(path, map_location="cpu", weights_only=False)
    weights = state.get("model") if isinstance(state, dict) else None
    if weights is None:
        raise ValueError(f"train.init_from {path!r} is not a supernet checkpoint (no 'model' weights in it)")
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise ValueError(f"train.init_from {path!r} holds another space's layers: {first}") from exc
    if net.space.feature_choices:
        net.sort_hidden_units()


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
    subnets on another split; a dict it returns joins the row. Torch's global random state
    is seeded inside and restored afterwards.
    """
    if space.num_classes != splits.num_classes:
        raise ValueError(
            f"space {space.name!r} has num_classes={space.num_classes}, the data has {splits.num_classes} classes"
        )
    dp = _DataParallel(config.device)
    with torch_threads(config.threads), seeded(config.seed, dp.accel):
        run = _SupernetRun(space, splits, config, Path(checkpoint), augment, dp, progress)
        for epoch in range(len(run.history), config.epochs):
            row = run.epoch(epoch)
            if on_epoch is not None:
                row.update(on_epoch(dict(row), run.net) or {})
                run.net.train()
            run.history.append(row)
            run.save()
            if progress and not dp.rank:
                logger.info(
                    f"supernet {epoch + 1}/{config.epochs}: loss {row['loss_largest']:.3f}, students "
                    f"{row['loss_students']:.3f}, val largest {row['val_largest']:.4f}, smallest "
                    f"{row['val_smallest']:.4f}, {row['images_per_second']:.0f} images/s on "
                    f"{dp.accel.describe()['device']}"
                )
    run.net.to(device="cpu", memory_format=torch.contiguous_format)
    return run.net.eval(), run.history


class _SupernetRun:
    """One training of a supernet: the net (resumed from its checkpoint), its optimisation, its history."""

    def __init__(
        self,
        space: Space,
        splits: Splits,
        config: TrainConfig,
        path: Path,
        augment: tuple[str, ...],
        dp: _DataParallel,
        progress: bool,
    ) -> None:
        self.space, self.splits, self.config, self.path, self.augment = space, splits, config, path, augment
        self.dp, self.accel, self.progress = dp, dp.accel, progress
        self.settings = {**dataclasses.asdict(config), "augment": list(augment)}
        if config.init_from is not None:  # the starting weights are an input: another file is another training
            self.settings["init_from"] = {"path": config.init_from, "digest": _init_digest(config.init_from)}
        self.steps = steps_per_epoch(splits, config)
        self.net = Supernet(space)
        state = _resume(path, space, self.settings)
        self.history: list[dict] = state["history"] if state else []
        if state:
            self.net.load_state_dict(state["model"])
        elif config.init_from is not None:
            _initialise(self.net, config.init_from)
        self.accel.module(self.net)
        self.optim = Optimization(
            self.net,
            config,
            total_steps=self.steps * config.epochs,
            warmup_steps=round(config.warmup_epochs * self.steps),
            accel=self.accel,
        )
        if state and len(self.history) < config.epochs:  # a finished training needs its weights only
            if "optimizer" not in state:
                raise ValueError(
                    f"checkpoint {str(path)!r} holds weights without the optimiser's state: it can be used, "
                    f"not trained further ({len(self.history)} of {config.epochs} epochs done)"
                )
            self.optim.load_state_dict(state)
        dp.broadcast(self.net)  # identical replicas to start from

    def epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch; its history row (losses, speed, the extremes' validation accuracy)."""
        config, dp, net = self.config, self.dp, self.net
        largest, smallest = self.space.largest(), self.space.smallest()
        net.train()
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 1000 + epoch)

        def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
            x, y = dp.shard(x, y)
            self.optim.zero_grad()
            students = [smallest] + [self.space.sample(rng) for _ in range(config.n_random)]
            losses = sandwich_step(net, x, y, students, largest, config, self.accel, self.optim.backward)
            dp.average_gradients(net)
            self.optim.step()
            return losses, len(y) * dp.world

        data = epoch_batches(
            self.splits,
            config,
            epoch,
            resolution=self.splits.train.size,
            channels=self.space.in_chs,
            augment=self.augment,
            accel=self.accel,
            rng=rng,
        )
        (loss_largest, loss_students), seen, seconds = train_epoch(
            step,
            data,
            total=self.steps,
            desc=f"supernet {epoch + 1}/{config.epochs}",
            names=("loss", "kd"),
            progress=self.progress and not dp.rank,
        )
        dp.average_buffers(net)
        row = {
            "epoch": epoch + 1,
            "loss_largest": loss_largest,
            "loss_students": loss_students,
            "seconds": seconds,
            "images_per_second": seen / seconds,
            "lr_end": self.optim.lr,
            "world_size": dp.world,
            "replica_checksums": dp.checksums(net),
            "compute": self.accel.describe(),
        }
        row.update(_score_extremes(net, self.splits, self.accel, config.seed))
        return row

    def save(self) -> None:
        """The checkpoint, replaced atomically; one writer (every rank holds the same weights)."""
        if self.dp.rank == 0:
            state = {
                "space": self.space.to_dict(),
                "config": self.settings,
                "model": _cpu_state(self.net),
                **self.optim.state_dict(),
                "history": self.history,
            }
            atomic_torch_save(state, self.path)


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
