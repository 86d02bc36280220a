"""Seeded, stratified train/val/test splits, and batches resized to an arch's resolution."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgenas.data._datasets import ImageData

__all__ = ["Splits", "batches", "make_splits", "prepare"]


@dataclass(frozen=True)
class Splits:
    """train / val / test, and the normalisation measured on train (one mean and std)."""

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
    mean = float(train.images.mean())
    std = float(train.images.std()) or 1.0
    return Splits(train, val, test, mean, std)


def prepare(images: np.ndarray, resolution: int, channels: int, mean: float, std: float) -> torch.Tensor:
    """A float tensor batch: normalised, channels matched (gray <-> RGB), resized to ``resolution``."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot map {x.shape[1]} image channels to {channels}")
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                          antialias=resolution < x.shape[-1])  # fmt: skip
    return (x - mean) / std


def batches(
    data: ImageData,
    *,
    batch_size: int,
    resolution: int,
    channels: int,
    mean: float,
    std: float,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
    drop_last: bool = False,
    limit: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches; ``limit`` stops after that many batches."""
    n = len(data.labels)
    order = (rng or np.random.default_rng(0)).permutation(n) if shuffle else np.arange(n)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for k, i in enumerate(range(0, stop, batch_size)):
        if limit is not None and k >= limit:
            return
        idx = order[i : i + batch_size]
        yield (prepare(data.images[idx], resolution, channels, mean, std), torch.from_numpy(data.labels[idx]))
