"""Pruning as the tests need it: the channel cuts alone, without finetuning, at a fixed score."""

from __future__ import annotations

import torch

from edgenas.pruning import PruneConfig, progressive_prune


def prune_untrained(net, input_size: int | tuple, config: PruneConfig, score: float = 0.5, **kwargs):
    """``progressive_prune`` with no finetune and every step scored ``score`` (so a tolerance >= 0 keeps every
    step): (pruned model, steps). ``input_size`` is a square image side, or the example input's whole shape."""
    shape = input_size if isinstance(input_size, tuple) else (1, 1, input_size, input_size)
    return progressive_prune(
        net, torch.zeros(shape), config, finetune=lambda m: None, evaluate=lambda m: score, **kwargs
    )
