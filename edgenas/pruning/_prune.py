"""Structured channel pruning with torch-pruning: L1 importance, progressive steps, finetune between.

torch-pruning's dependency graph keeps coupled layers consistent: a depthwise conv loses
exactly the channels its expand conv loses, an SE module follows the channels it gates,
and blocks joined by a residual sum lose the same channels together. The classifier's
output layer is never pruned, and channel counts are rounded to a multiple of
``divisor`` (hardware-friendly vector widths).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

__all__ = ["PruneConfig", "PruneStep", "channel_counts", "progressive_prune"]


@dataclass(frozen=True)
class PruneConfig:
    step: float = 0.1  # share of the original channels removed per step
    max_steps: int = 5
    divisor: int = 8
    tolerance: float = 0.01  # stop when accuracy falls more than this below the start
    latency_target_ms: float | None = None  # stop once the measured latency is at or below
    # stop once the predicted activation memory / model size (kB of 1024 bytes, at the device's
    # precision) is at or below; with several targets, once all of them are met
    ram_target_kb: float | None = None
    flash_target_kb: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.step <= 0.5:
            raise ValueError(f"prune.step must be in (0, 0.5], got {self.step}")
        if self.max_steps < 0 or self.step * self.max_steps >= 1.0:
            raise ValueError(f"prune.max_steps must be >= 0 with step * max_steps < 1, got {self.max_steps}")
        if self.divisor < 1:
            raise ValueError(f"prune.divisor must be >= 1, got {self.divisor}")
        if self.tolerance < 0:
            raise ValueError(f"prune.tolerance must be >= 0, got {self.tolerance}")
        for key in ("latency_target_ms", "ram_target_kb", "flash_target_kb"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"prune.{key} must be > 0, got {value}")

    @property
    def targets(self) -> dict[str, float]:
        """The targets set, by the figure they bound (``latency_ms``, ``ram_kb``, ``flash_kb``)."""
        limits = {"latency_ms": self.latency_target_ms, "ram_kb": self.ram_target_kb, "flash_kb": self.flash_target_kb}
        return {k: v for k, v in limits.items() if v is not None}

    def met(self, step: PruneStep) -> bool:
        """Whether ``step`` meets every target set (False without targets: prune to the end)."""
        figures = dataclasses.asdict(step)
        return bool(self.targets) and all(figures[k] is not None and figures[k] <= v for k, v in self.targets.items())


@dataclass(frozen=True)
class PruneStep:
    step: int
    params: int
    accuracy: float
    latency_ms: float | None
    kept: bool
    ram_kb: float | None = None  # predicted, at the device's precision
    flash_kb: float | None = None


def channel_counts(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def _output_layer(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("pruning needs a model whose last layer is an nn.Linear classifier")
    return linears[-1]


def progressive_prune(
    model: nn.Module,
    example_input: torch.Tensor,
    config: PruneConfig,
    *,
    finetune: Callable[[nn.Module], None],
    evaluate: Callable[[nn.Module], float],
    latency: Callable[[nn.Module], float] | None = None,
    memory: Callable[[nn.Module], tuple[float, float]] | None = None,
    on_step: Callable[[PruneStep, nn.Module], None] | None = None,
) -> tuple[nn.Module, list[PruneStep]]:
    """Prune ``model`` step by step; return the last model within tolerance and the steps taken.

    After each step the model is finetuned (``finetune``), evaluated (``evaluate``, accuracy)
    and, if given, timed (``latency``, ms) and sized (``memory``: predicted activation
    memory and model size, kB). A step whose accuracy falls more than ``tolerance`` below
    the unpruned model's is undone and pruning stops; so does meeting every target of
    ``config`` (latency, RAM, flash).
    """
    model = copy.deepcopy(model).eval()

    def record(i: int, acc: float, kept: bool) -> PruneStep:
        ram, flash = memory(model) if memory else (None, None)
        return PruneStep(
            i, sum(p.numel() for p in model.parameters()), acc, latency(model) if latency else None, kept, ram, flash
        )

    base_acc = evaluate(model)
    steps = [record(0, base_acc, True)]
    if config.max_steps == 0 or config.met(steps[0]):
        return model, steps
    pruner = tp.pruner.MetaPruner(
        model,
        example_input,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=config.step * config.max_steps,
        iterative_steps=config.max_steps,
        ignored_layers=[_output_layer(model)],
        round_to=config.divisor,
    )
    best = copy.deepcopy(model)
    for i in range(1, config.max_steps + 1):
        pruner.step()
        finetune(model)
        model.eval()
        acc = evaluate(model)
        step = record(i, acc, acc >= base_acc - config.tolerance)
        steps.append(step)
        if on_step:
            on_step(step, model)
        if not step.kept:
            break
        best = copy.deepcopy(model)
        if config.met(step):
            break
    return best.eval(), steps
