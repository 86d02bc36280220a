"""Seeded, stratified train/val/test splits, and batches made on the training device.

A batch leaves the host as uint8 (a quarter of float32's bytes) and is turned into the
network's input where it is used: augmented (random crop from a padded image, horizontal
flip), converted to float, channel-matched, resized to the arch's resolution and normalised,
all as whole-batch tensor operations, so a GPU does it at memory speed and the CPU path
is the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgenas.accelerator import Accelerator
from edgenas.data._datasets import ImageData
from edgenas.data._folder import read_ahead

AUGMENTATIONS = ("crop", "flip")
# Data sets whose classes change under a mirror image (digits): no flip for them by default.
_NO_FLIP = ("digits", "mnist5k")

__all__ = ["AUGMENTATIONS", "Splits", "augment_batch", "batches", "make_splits", "prepare", "resolve_augment"]


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


def resolve_augment(spec: str | tuple[str, ...] | list[str], dataset: str) -> tuple[str, ...]:
    """The augmentations for ``spec``: ``auto``, ``none`` or a list of ``crop``, ``crop:PAD``, ``flip``.

    ``auto`` is ``crop`` + ``flip`` (a random crop of the image padded by side/14 pixels, a
    mirror image half the time), without ``flip`` for digit data sets (``digits``,
    ``mnist5k``), whose classes a mirror image changes. Raises ValueError naming a bad item.
    """
    if isinstance(spec, str):
        if spec == "none":
            return ()
        if spec == "auto":
            return ("crop",) if dataset in _NO_FLIP else ("crop", "flip")
        spec = (spec,)
    out = []
    for item in spec:
        name, _, arg = str(item).partition(":")
        if name not in AUGMENTATIONS or (arg and (name != "crop" or not arg.isdigit())):
            raise ValueError(f"unknown augmentation {item!r}; allowed: 'auto', 'none' or a list of "
                             "'crop', 'crop:<pad pixels>', 'flip'")  # fmt: skip
        out.append(str(item))
    return tuple(out)


def _crop_pad(item: str, side: int) -> int:
    _, _, arg = item.partition(":")
    return int(arg) if arg else max(1, side // 14)


def augment_batch(x: torch.Tensor, augment: tuple[str, ...], rng: np.random.Generator) -> torch.Tensor:
    """Random pad-and-crop and horizontal flips of a uint8 (N, C, H, W) batch, on its own device.

    Offsets and flips come from ``rng`` (host side), so a seeded run augments identically
    on every device.
    """
    n, _, h, w = x.shape
    for item in augment:
        if item.startswith("crop"):
            pad = _crop_pad(item, min(h, w))
            padded = F.pad(x, (pad, pad, pad, pad))
            dy = torch.from_numpy(rng.integers(0, 2 * pad + 1, n)).to(x.device)
            dx = torch.from_numpy(rng.integers(0, 2 * pad + 1, n)).to(x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            index = torch.arange(n, device=x.device)[:, None, None, None]
            chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[index, chans, rows, cols]
        elif item == "flip":
            flip = torch.from_numpy(rng.random(n) < 0.5).to(x.device)[:, None, None, None]
            x = torch.where(flip, x.flip(3), x)
    return x


def _to_input(x: torch.Tensor, resolution: int, channels: int, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, C, H, W) on any device -> the network's float input at ``resolution``."""
    x = x.float().div_(255.0)
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot map {x.shape[1]} image channels to {channels}")
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                          antialias=resolution < x.shape[-1])  # fmt: skip
    return (x - mean) / std


def prepare(images: np.ndarray, resolution: int, channels: int, mean: float, std: float) -> torch.Tensor:
    """A float CPU batch from uint8 images: channels matched (gray <-> RGB), resized, normalised."""
    return _to_input(torch.from_numpy(np.ascontiguousarray(images)), resolution, channels, mean, std)


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
    augment: tuple[str, ...] = (),
    accel: Accelerator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches on ``accel``'s device (default: the CPU), in its memory format.

    ``limit`` stops after that many batches; ``augment`` (see :func:`resolve_augment`)
    draws its randomness from ``rng``, which must then be given.
    """
    if augment and rng is None:
        raise ValueError("augmented batches need an rng")
    rng = rng or np.random.default_rng(0)
    n = len(data.labels)
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    index_batches = [order[i : i + batch_size] for i in range(0, stop, batch_size)][:limit]
    pin = accel is not None and accel.device.type == "cuda"
    if data.streamed:  # decoded by worker processes, ahead of use
        read = read_ahead(data.images, index_batches)
    else:
        read = (data.pixels(idx) for idx in index_batches)
    for idx, (pixels, ok) in zip(index_batches, read):
        if not ok.all():
            data.images.note_skipped(idx, ok)
            idx = idx[ok]
            if len(idx) == 0:
                continue
        x, y = torch.from_numpy(np.ascontiguousarray(pixels)), torch.from_numpy(data.labels[idx])
        if pin:
            x, y = x.pin_memory(), y.pin_memory()
        if accel is not None:
            x, y = x.to(accel.device, non_blocking=True), y.to(accel.device, non_blocking=True)
        if augment:
            x = augment_batch(x, augment, rng)
        x = _to_input(x, resolution, channels, mean, std)
        yield (accel.tensor(x) if accel is not None else x), y
