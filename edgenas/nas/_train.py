"""Supernet training: the sandwich rule with in-place distillation, checkpointed every epoch.

Runs on one process or data-parallel over torch.distributed (``torchrun``; see
:class:`_DataParallel`). Each step trains the largest subnet (at the largest resolution)
on the labels, then the smallest and ``n_random`` random subnets (each at its own
resolution) on the largest's soft targets with :func:`edgenas.distill.distillation_loss`,
and takes one optimiser step on the summed gradients (Yu et al., BigNAS / "universally slimmable networks"). The
checkpoint (weights, optimiser, scheduler, history) is replaced atomically after every
epoch; a killed training resumes from it. Random choices come from generators seeded by
(seed, epoch), so a resumed run follows the same path as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edgenas.data import Splits, batches
from edgenas.distill import cosine_schedule, distillation_loss, make_optimizer
from edgenas.io import atomic_write_bytes
from edgenas.search_spaces import Space, Supernet

__all__ = ["TrainConfig", "load_supernet", "set_threads", "train_supernet"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    n_random: int = 2
    temperature: float = 4.0
    alpha: float = 0.7
    threads: int = 0  # 0: every core
    seed: int = 0
    max_steps_per_epoch: int | None = None  # cap for quick runs

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError(f"train needs epochs >= 1, batch_size >= 2, lr > 0; got {self}")
        if self.n_random < 0:
            raise ValueError(f"train.n_random must be >= 0, got {self.n_random}")
        if self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise ValueError(f"train needs temperature > 0 and alpha in [0, 1]; got {self}")


def set_threads(threads: int) -> int:
    """Use ``threads`` torch threads (0: every core) and return the number set."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=resolution < x.shape[-1])  # fmt: skip


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
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dist.init_process_group("gloo")
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
        local = torch.tensor([float(sum(p.detach().double().sum() for p in module.parameters()))], dtype=torch.float64)
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


def train_supernet(
    space: Space,
    splits: Splits,
    config: TrainConfig,
    checkpoint: str | os.PathLike,
    *,
    progress: bool = True,
) -> tuple[Supernet, list[dict]]:
    """Train (or resume training) the supernet of ``space``; returns it and the per-epoch history."""
    if space.num_classes != splits.num_classes:
        raise ValueError(f"space {space.name!r} has num_classes={space.num_classes}, the data has "
                         f"{splits.num_classes} classes")  # fmt: skip
    dp = _DataParallel()
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    net = Supernet(space)
    opt = make_optimizer(net, config.lr, config.momentum, config.weight_decay)
    n = len(splits.train.labels)
    steps = max(1, n // config.batch_size)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    sched = cosine_schedule(opt, steps * config.epochs)
    history: list[dict] = []
    path = Path(checkpoint)
    cfg = dataclasses.asdict(config)
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("space") != space.to_dict():
            raise ValueError(f"checkpoint {str(path)!r} belongs to another space; remove it or use another path")
        same = {k: v for k, v in state["config"].items() if k not in ("epochs", "threads")}
        if same != {k: v for k, v in cfg.items() if k not in ("epochs", "threads")}:
            raise ValueError(f"checkpoint {str(path)!r} was trained with other settings {state['config']}; "
                             "remove it or use another path")  # fmt: skip
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history = state["history"]
    dp.broadcast(net)  # identical replicas to start from

    largest, smallest = space.largest(), space.smallest()
    for epoch in range(len(history), config.epochs):
        net.train()
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 1000 + epoch)
        sums, seen, start = np.zeros(2), 0, time.time()
        it = batches(splits.train, batch_size=config.batch_size, resolution=splits.train.size, channels=space.in_chs,
                     mean=splits.mean, std=splits.std, shuffle=True, rng=rng, drop_last=True, limit=steps)  # fmt: skip
        bar = tqdm(it, total=steps, desc=f"supernet {epoch + 1}/{config.epochs}", disable=not progress or dp.rank)
        for k, (x, y) in enumerate(bar):
            x, y = dp.shard(x, y)
            opt.zero_grad(set_to_none=True)
            logits = net(_resize(x, largest.resolution), largest)
            loss_big = F.cross_entropy(logits, y)
            loss_big.backward()
            soft = logits.detach()
            students = [smallest] + [space.sample(rng) for _ in range(config.n_random)]
            loss_small = 0.0
            for arch in students:
                out = net(_resize(x, arch.resolution), arch)
                loss = distillation_loss(out, soft, y, temperature=config.temperature, alpha=config.alpha)
                loss.backward()
                loss_small += loss.item() / len(students)
            dp.average_gradients(net)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            sums += (loss_big.item(), loss_small)
            seen += len(y) * dp.world
            bar.set_postfix(loss=f"{sums[0] / (k + 1):.3f}", kd=f"{sums[1] / (k + 1):.3f}",
                            img_s=f"{seen / (time.time() - start):.0f}")  # fmt: skip
        dp.average_buffers(net)
        history.append({"epoch": epoch + 1, "loss_largest": sums[0] / steps, "loss_students": sums[1] / steps,
                        "seconds": time.time() - start, "images_per_second": seen / (time.time() - start),
                        "world_size": dp.world, "replica_checksums": dp.checksums(net)})  # fmt: skip
        if dp.rank == 0:  # one writer; every rank holds the same weights
            state = {"space": space.to_dict(), "config": cfg, "model": net.state_dict(),
                     "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history}  # fmt: skip
            atomic_write_bytes(path, _checkpoint_bytes(state))
    return net.eval(), history
