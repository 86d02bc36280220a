"""Structured channel pruning with torch-pruning: L1 importance, progressive steps, finetune between.

torch-pruning's dependency graph keeps coupled layers consistent: a depthwise conv loses
exactly the channels its expand conv loses, an SE module follows the channels it gates,
and blocks joined by a residual sum lose the same channels together. The classifier's
output layer is never pruned, and channel counts are rounded to the *nearest* multiple of
``divisor`` (hardware-friendly vector widths: finalize's default is the channel block the
device's table found its runtime computing in, :meth:`PruneConfig.resolved`). Nearest, not
down as torch-pruning rounds: rounded down, a 5 % step took 8 of a 16-channel layer's
channels, half of it, and every narrow layer lost at least a whole block at every step (a
"5 %" step removed 19 % of a Fashion-MNIST model's parameters and cost 1.6 points); rounded
to the nearest, a layer too narrow for the step keeps its channels and the wide ones pay.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from edgenas.config import PruneConfig

__all__ = ["PruneConfig", "PruneStep", "channel_counts", "progressive_prune"]


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


class _NearestPruner(tp.pruner.MetaPruner):
    """torch-pruning's pruner with each layer's kept channels rounded to the nearest multiple of ``round_to``
    (at least one), where torch-pruning rounds them down."""

    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        kept = max(round_to, int((current_channels - n_pruned) / round_to + 0.5) * round_to)  # halves kept
        return max(current_channels - kept, 0)


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
    config = config.resolved(None)  # an "auto" divisor not resolved to a device's channel block: 8
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
    pruner = _NearestPruner(
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
