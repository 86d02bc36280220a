"""Structured channel pruning with torch-pruning: L1 importance, progressive steps, finetune between.

torch-pruning's dependency graph keeps coupled layers consistent: a depthwise conv loses
exactly the channels its expand conv loses, an SE module follows the channels it gates,
and blocks joined by a residual sum lose the same channels together. The classifier's
output layer is never pruned, and channel counts are rounded to a multiple of
``divisor`` (hardware-friendly vector widths).
"""

from __future__ import annotations

import copy
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

    def __post_init__(self) -> None:
        if not 0.0 < self.step <= 0.5:
            raise ValueError(f"prune.step must be in (0, 0.5], got {self.step}")
        if self.max_steps < 0 or self.step * self.max_steps >= 1.0:
            raise ValueError(f"prune.max_steps must be >= 0 with step * max_steps < 1, got {self.max_steps}")
        if self.divisor < 1:
            raise ValueError(f"prune.divisor must be >= 1, got {self.divisor}")
        if self.tolerance < 0:
            raise ValueError(f"prune.tolerance must be >= 0, got {self.tolerance}")


@dataclass(frozen=True)
class PruneStep:
    step: int
    params: int
    accuracy: float
    latency_ms: float | None
    kept: bool


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
    on_step: Callable[[PruneStep, nn.Module], None] | None = None,
) -> tuple[nn.Module, list[PruneStep]]:
    """Prune ``model`` step by step; return the last model within tolerance and the steps taken.

    After each step the model is finetuned (``finetune``), evaluated (``evaluate``, accuracy)
    and, if given, timed (``latency``, ms). A step whose accuracy falls more than
    ``tolerance`` below the unpruned model's is undone and pruning stops; so does reaching
    ``latency_target_ms``.
    """
    model = copy.deepcopy(model).eval()
    base_acc = evaluate(model)
    base_lat = latency(model) if latency else None
    steps = [PruneStep(0, sum(p.numel() for p in model.parameters()), base_acc, base_lat, True)]
    if config.max_steps == 0 or (config.latency_target_ms and base_lat is not None and
                                 base_lat <= config.latency_target_ms):  # fmt: skip
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
        lat = latency(model) if latency else None
        kept = acc >= base_acc - config.tolerance
        step = PruneStep(i, sum(p.numel() for p in model.parameters()), acc, lat, kept)
        steps.append(step)
        if on_step:
            on_step(step, model)
        if not kept:
            break
        best = copy.deepcopy(model)
        if config.latency_target_ms is not None and lat is not None and lat <= config.latency_target_ms:
            break
    return best.eval(), steps
