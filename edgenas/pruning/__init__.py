"""Structured pruning: progressive L1 channel pruning with torch-pruning, finetuned between steps."""

from __future__ import annotations

from edgenas.pruning._prune import PruneConfig, PruneStep, channel_counts, progressive_prune

__all__ = ["PruneConfig", "PruneStep", "channel_counts", "progressive_prune"]
