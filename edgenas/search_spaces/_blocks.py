"""Standalone torch blocks built from a :class:`BlockSpec`, and a subnet made of them.

These are plain ``nn.Module`` s with no elastic state: what :func:`build_subnet` returns is
what gets finetuned, pruned, quantized and exported. Activations are ReLU6 and hardswish,
the SE gate is hardsigmoid: all of them have cheap, exact int8 forms.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from edgenas.search_spaces._arch import Arch
from edgenas.search_spaces._space import BlockSpec, Space, se_channels

__all__ = [
    "Classifier",
    "ConvBNAct",
    "DepthwiseSeparable",
    "InvertedResidual",
    "SqueezeExcite",
    "SubNet",
    "build_block",
    "build_subnet",
    "current_specs",
    "make_act",
]


def make_act(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name == "relu6":
        return nn.ReLU6(inplace=False)
    if name == "hswish":
        return nn.Hardswish(inplace=False)
    raise ValueError(f"unknown activation {name!r}; allowed: ('relu6', 'hswish')")


class ConvBNAct(nn.Module):
    """k x k convolution (no bias) + BatchNorm + activation (``act=None``: none)."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: str | None = None
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: global pool -> 1x1 reduce + ReLU -> 1x1 expand -> hardsigmoid gate."""

    def __init__(self, chs: int, reduced: int | None = None):
        super().__init__()
        reduced = se_channels(chs) if reduced is None else reduced
        self.fc1 = nn.Conv2d(chs, reduced, 1)
        self.act = nn.ReLU(inplace=False)
        self.fc2 = nn.Conv2d(reduced, chs, 1)
        self.gate = nn.Hardsigmoid(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class DepthwiseSeparable(nn.Module):
    """Depthwise k x k + BN + act [+ SE] -> pointwise 1x1 + BN, residual when shapes match."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.dw = ConvBNAct(spec.in_chs, spec.in_chs, spec.kernel, spec.stride, spec.in_chs, spec.act)
        self.se = SqueezeExcite(spec.in_chs) if spec.se else None
        self.pw = ConvBNAct(spec.in_chs, spec.out_chs, 1)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x)
        if self.se is not None:
            y = self.se(y)
        y = self.pw(y)
        return x + y if self.residual else y


class InvertedResidual(nn.Module):
    """1x1 expand + act -> depthwise k x k + act [+ SE] -> 1x1 project, residual when shapes match."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.expand = ConvBNAct(spec.in_chs, spec.mid_chs, 1, act=spec.act)
        self.dw = ConvBNAct(spec.mid_chs, spec.mid_chs, spec.kernel, spec.stride, spec.mid_chs, spec.act)
        self.se = SqueezeExcite(spec.mid_chs) if spec.se else None
        self.project = ConvBNAct(spec.mid_chs, spec.out_chs, 1)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.expand(x))
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class Classifier(nn.Module):
    """Global average pool -> linear + hardswish -> linear to the classes (MobileNetV3's head)."""

    def __init__(self, spec: BlockSpec, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(spec.in_chs, spec.mid_chs)
        self.act = make_act(spec.act)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(spec.mid_chs, spec.out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the pool keeps its dims, then flattens: XNNPACK delegates only that form of a mean (a plain
        # mean ran as a portable kernel between two delegate calls, up to 45 % of a small net's time)
        return self.fc2(self.dropout(self.act(self.fc1(x.mean((2, 3), keepdim=True).flatten(1)))))


def build_block(spec: BlockSpec) -> nn.Module:
    """The standalone module of one block spec."""
    if spec.kind == "conv":
        return ConvBNAct(spec.in_chs, spec.out_chs, spec.kernel, spec.stride, act=spec.act)
    if spec.kind == "ds":
        return DepthwiseSeparable(spec)
    if spec.kind == "ir":
        return InvertedResidual(spec)
    if spec.kind == "classifier":
        return Classifier(spec)
    raise ValueError(f"unknown block kind {spec.kind!r}")


class SubNet(nn.Module):
    """A standalone network: the blocks of one arch in sequence."""

    def __init__(self, specs: tuple[BlockSpec, ...], arch: str = ""):
        super().__init__()
        self.specs = tuple(specs)
        self.arch = arch
        self.blocks = nn.Sequential(*[build_block(s) for s in specs])

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        first = self.specs[0]
        return (1, first.in_chs, first.in_size, first.in_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def build_subnet(space: Space, arch: Arch) -> SubNet:
    """A freshly initialised standalone network for ``arch`` (see Supernet.extract for weights)."""
    return SubNet(space.block_specs(arch), str(arch))


def current_specs(net: SubNet) -> tuple[BlockSpec, ...]:
    """The block specs ``net`` has now: its layers' channel counts, which pruning changes.

    ``net.specs`` keeps the arch's specs (kernel, stride, SE, activation, sizes stay); the
    channel counts come from the layers. Pruning a block's SE reduction is not described by a
    spec (its width derives from ``mid_chs``), nor is the residual add of a block whose
    pruned input and output widths became equal by chance: both cost little.
    """
    specs = []
    for spec, block in zip(net.specs, net.blocks):
        if spec.kind == "conv":
            chs = {"in_chs": block.conv.in_channels, "out_chs": block.conv.out_channels}
        elif spec.kind == "ds":
            chs = {
                "in_chs": block.dw.conv.in_channels,
                "mid_chs": block.dw.conv.in_channels,
                "out_chs": block.pw.conv.out_channels,
            }
        elif spec.kind == "ir":
            chs = {
                "in_chs": block.expand.conv.in_channels,
                "mid_chs": block.expand.conv.out_channels,
                "out_chs": block.project.conv.out_channels,
            }
        else:
            chs = {
                "in_chs": block.fc1.in_features,
                "mid_chs": block.fc1.out_features,
                "out_chs": block.fc2.out_features,
            }
        specs.append(dataclasses.replace(spec, **chs))
    return tuple(specs)
