"""Seeded, stratified train/val/test splits and the training split's normalisation, in numpy alone.

Torch-free, so that ``edgenas predict`` can rebuild the test split a model was scored on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgenas.data._datasets import ImageData

__all__ = ["Splits", "make_splits"]


@dataclass(frozen=True)
class Splits:
    """train / val / test, and the normalisation measured on train (one mean and std, pixels in [0, 1])."""

    train: ImageData
    val: ImageData
    test: ImageData
    mean: float
    std: float

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    def describe(self) -> dict:
        return {
            "dataset": self.train.name,
            "train": len(self.train.labels),
            "val": len(self.val.labels),
            "test": len(self.test.labels),
            "classes": len(self.train.classes),
            "image": list(self.train.images.shape[1:]),
        }


def _stratified(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, taken): ``fraction`` of every class taken (at least one where it has two)."""
    taken = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        taken.append(idx[:k])
    taken = np.sort(np.concatenate(taken))
    kept = np.setdiff1d(np.arange(len(labels)), taken)
    return kept, taken


def make_splits(
    data: ImageData,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    train_limit: int | None = None,
) -> Splits:
    """Split ``data`` deterministically from ``seed`` (a data set's own test split is kept).

    ``train_limit`` keeps a stratified subset of that many training images (for quick runs).
    """
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < v < 0.5:
            raise ValueError(f"{name} must be in (0, 0.5), got {v}")
    if train_limit is not None and train_limit < len(data.classes):
        raise ValueError(f"train_limit must be >= the number of classes ({len(data.classes)}), got {train_limit}")
    rng = np.random.default_rng(seed)
    if data.test is not None:
        rest, test = data, data.test
    else:
        keep, take = _stratified(data.labels, test_fraction, rng)
        rest, test = data.subset(keep), data.subset(take, f"{data.name}-test")
    keep, take = _stratified(rest.labels, val_fraction, rng)
    train, val = rest.subset(keep, f"{data.name}-train"), rest.subset(take, f"{data.name}-val")
    if train_limit is not None and train_limit < len(train.labels):
        rest_idx, take = _stratified(train.labels, train_limit / len(train.labels), rng)
        # per-class rounding can miss the total by a few: trim or top up at random
        if len(take) > train_limit:
            take = np.sort(rng.choice(take, train_limit, replace=False))
        elif len(take) < train_limit:
            take = np.sort(np.concatenate([take, rng.choice(rest_idx, train_limit - len(take), replace=False)]))
        train = train.subset(take, f"{data.name}-train")
    mean, std = _mean_std(train, rng)
    return Splits(train, val, test, mean, std)


_STATS_SAMPLE = 2048  # images decoded to estimate a streamed data set's mean and std


def _mean_std(data: ImageData, rng: np.random.Generator) -> tuple[float, float]:
    """Mean and std of the pixels scaled to [0, 1], accumulated in chunks (no float copy of the set).

    In-memory data: every image. Streamed data: a seeded sample of 2,048 images.
    """
    index = np.arange(len(data.labels))
    if data.streamed and len(index) > _STATS_SAMPLE:
        index = np.sort(rng.choice(index, _STATS_SAMPLE, replace=False))
    n = s1 = s2 = 0.0
    for i in range(0, len(index), 4096):
        chunk = data.pixels(index[i : i + 4096])[0].astype(np.float64) / 255.0
        n += chunk.size
        s1 += float(chunk.sum())
        s2 += float((chunk * chunk).sum())
    mean = s1 / n
    return mean, float(np.sqrt(max(s2 / n - mean * mean, 0.0))) or 1.0
