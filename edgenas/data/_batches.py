"""Batches made on the training device (the splits themselves: ``_split``, torch-free).

A batch leaves the host as uint8 (a quarter of float32's bytes) and is turned into the
network's input where it is used: augmented (random crop from a padded image, horizontal
flip), converted to float, channel-matched, resized to the arch's resolution and normalised,
all as whole-batch tensor operations, so a GPU does it at memory speed and the CPU path
is the same code.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from edgenas.accelerator import Accelerator
from edgenas.data._datasets import ImageData
from edgenas.data._folder import read_ahead

__all__ = ["augment_batch", "batches", "prepare"]


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
        x = F.interpolate(
            x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=resolution < x.shape[-1]
        )
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
    indices: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """(images, labels) batches on ``accel``'s device (default: the CPU), in its memory format.

    ``limit`` stops after that many batches; ``augment`` (see :func:`resolve_augment`)
    draws its randomness from ``rng``, which must then be given. ``indices``: each batch
    also gives its images' positions in ``data`` (images, labels, positions).
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
        x = accel.tensor(x) if accel is not None else x
        yield (x, y, torch.from_numpy(idx).to(y.device)) if indices else (x, y)
