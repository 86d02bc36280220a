"""The weight-sharing supernet of a space, and extraction of standalone subnets from it.

Every layer holds the weights of its largest configuration. A smaller configuration uses a
slice: the first ``c`` channels (width and expand ratio), the centre ``k x k`` of the
largest kernel, the first ``d`` blocks of a stage, the first ``f`` units of the classifier's
hidden layer. ``forward(x, arch)`` is a pure function
of the arch (no active-subnet state is stored in the modules), and each elastic layer has
one ``sliced`` method that both the forward pass and :meth:`Supernet.extract` use, so the
extracted subnet computes exactly what the supernet computes for that arch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.search_spaces._arch import Arch
from edgenas.search_spaces._blocks import SubNet, build_subnet
from edgenas.search_spaces._space import BlockSpec, Space, make_divisible, se_channels

__all__ = ["Supernet"]


def _act(x: torch.Tensor, name: str | None) -> torch.Tensor:
    if name is None:
        return x
    return F.relu6(x) if name == "relu6" else F.hardswish(x)


class _ElasticConvBN(nn.Module):
    """Conv (no bias) + BN at the largest size; slices channels and the kernel's centre."""

    def __init__(self, in_max: int, out_max: int, kernel_max: int, depthwise: bool = False):
        super().__init__()
        self.depthwise = depthwise
        self.kernel_max = kernel_max
        self.weight = nn.Parameter(torch.empty(out_max, 1 if depthwise else in_max, kernel_max, kernel_max))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bn = nn.BatchNorm2d(out_max)

    def sliced(self, in_chs: int, out_chs: int, kernel: int) -> dict[str, torch.Tensor]:
        off = (self.kernel_max - kernel) // 2
        w = self.weight[:out_chs, : 1 if self.depthwise else in_chs, off : off + kernel, off : off + kernel]
        bn = self.bn
        return {
            "conv.weight": w,
            "bn.weight": bn.weight[:out_chs],
            "bn.bias": bn.bias[:out_chs],
            "bn.running_mean": bn.running_mean[:out_chs],
            "bn.running_var": bn.running_var[:out_chs],
        }

    def forward(
        self, x: torch.Tensor, in_chs: int, out_chs: int, kernel: int, stride: int, act: str | None
    ) -> torch.Tensor:
        p = self.sliced(in_chs, out_chs, kernel)
        x = F.conv2d(x, p["conv.weight"], None, stride, kernel // 2, 1, out_chs if self.depthwise else 1)
        # Slices of the running buffers are views, so training-mode BN updates the shared
        # statistics of exactly the channels this subnet uses.
        x = F.batch_norm(
            x,
            p["bn.running_mean"],
            p["bn.running_var"],
            p["bn.weight"],
            p["bn.bias"],
            self.training,
            self.bn.momentum if self.bn.momentum is not None else 0.1,
            self.bn.eps,
        )
        return _act(x, act)


class _ElasticSE(nn.Module):
    def __init__(self, chs_max: int):
        super().__init__()
        reduced = se_channels(chs_max)
        self.fc1 = nn.Conv2d(chs_max, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, chs_max, 1)

    def sliced(self, chs: int) -> dict[str, torch.Tensor]:
        r = se_channels(chs)
        return {
            "fc1.weight": self.fc1.weight[:r, :chs],
            "fc1.bias": self.fc1.bias[:r],
            "fc2.weight": self.fc2.weight[:chs, :r],
            "fc2.bias": self.fc2.bias[:chs],
        }

    def forward(self, x: torch.Tensor, chs: int) -> torch.Tensor:
        p = self.sliced(chs)
        s = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), p["fc1.weight"], p["fc1.bias"]))
        return x * F.hardsigmoid(F.conv2d(s, p["fc2.weight"], p["fc2.bias"]))


def _prefixed(prefix: str, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in params.items()}


class _ElasticConv(nn.Module):
    """The ``conv`` block kind (stem, final 1x1 expansion) with elastic channels."""

    def __init__(self, in_max: int, out_max: int, kernel: int):
        super().__init__()
        self.layer = _ElasticConvBN(in_max, out_max, kernel)

    def sliced(self, spec: BlockSpec) -> dict[str, torch.Tensor]:
        return self.layer.sliced(spec.in_chs, spec.out_chs, spec.kernel)

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        return self.layer(x, spec.in_chs, spec.out_chs, spec.kernel, spec.stride, spec.act)


class _ElasticDS(nn.Module):
    def __init__(self, in_max: int, out_max: int, kernel_max: int):
        super().__init__()
        self.dw = _ElasticConvBN(in_max, in_max, kernel_max, depthwise=True)
        self.se = _ElasticSE(in_max)
        self.pw = _ElasticConvBN(in_max, out_max, 1)

    def sliced(self, spec: BlockSpec) -> dict[str, torch.Tensor]:
        p = _prefixed("dw", self.dw.sliced(spec.in_chs, spec.in_chs, spec.kernel))
        if spec.se:
            p.update(_prefixed("se", self.se.sliced(spec.in_chs)))
        p.update(_prefixed("pw", self.pw.sliced(spec.in_chs, spec.out_chs, 1)))
        return p

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        y = self.dw(x, spec.in_chs, spec.in_chs, spec.kernel, spec.stride, spec.act)
        if spec.se:
            y = self.se(y, spec.in_chs)
        y = self.pw(y, spec.in_chs, spec.out_chs, 1, 1, None)
        return x + y if spec.residual else y


class _ElasticIR(nn.Module):
    def __init__(self, in_max: int, out_max: int, kernel_max: int, mid_max: int):
        super().__init__()
        self.expand = _ElasticConvBN(in_max, mid_max, 1)
        self.dw = _ElasticConvBN(mid_max, mid_max, kernel_max, depthwise=True)
        self.se = _ElasticSE(mid_max)
        self.project = _ElasticConvBN(mid_max, out_max, 1)

    def sliced(self, spec: BlockSpec) -> dict[str, torch.Tensor]:
        m = spec.mid_chs
        p = _prefixed("expand", self.expand.sliced(spec.in_chs, m, 1))
        p.update(_prefixed("dw", self.dw.sliced(m, m, spec.kernel)))
        if spec.se:
            p.update(_prefixed("se", self.se.sliced(m)))
        p.update(_prefixed("project", self.project.sliced(m, spec.out_chs, 1)))
        return p

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        m = spec.mid_chs
        y = self.expand(x, spec.in_chs, m, 1, 1, spec.act)
        y = self.dw(y, m, m, spec.kernel, spec.stride, spec.act)
        if spec.se:
            y = self.se(y, m)
        y = self.project(y, m, spec.out_chs, 1, 1, None)
        return x + y if spec.residual else y


class _ElasticClassifier(nn.Module):
    def __init__(self, in_max: int, hidden: int, num_classes: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(in_max, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def sliced(self, spec: BlockSpec) -> dict[str, torch.Tensor]:
        hidden = spec.mid_chs
        return {
            "fc1.weight": self.fc1.weight[:hidden, : spec.in_chs],
            "fc1.bias": self.fc1.bias[:hidden],
            "fc2.weight": self.fc2.weight[:, :hidden],
            "fc2.bias": self.fc2.bias,
        }

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        p = self.sliced(spec)
        y = F.hardswish(F.linear(x.mean((2, 3)), p["fc1.weight"], p["fc1.bias"]))
        return F.linear(self.dropout(y), p["fc2.weight"], p["fc2.bias"])


class Supernet(nn.Module):
    """All subnets of a space in one module; ``forward(x, arch)`` runs one of them."""

    def __init__(self, space: Space, *, dropout: float = 0.0):
        super().__init__()
        self.space = space
        ch = space.channels(max(space.widths))
        self.stem = _ElasticConv(space.in_chs, ch["stem"], space.stem_kernel)
        self.ds = _ElasticDS(ch["stem"], ch["ds"], space.ds_kernel)
        self.stages = nn.ModuleList()
        in_max = ch["ds"]
        for stage, out_max in zip(space.stages, ch["stages"]):
            blocks = nn.ModuleList()
            for j in range(max(stage.depths)):
                block_in = in_max if j == 0 else out_max
                mid_max = make_divisible(block_in * max(stage.expands))
                blocks.append(_ElasticIR(block_in, out_max, max(stage.kernels), mid_max))
            self.stages.append(blocks)
            in_max = out_max
        self.head = _ElasticConv(in_max, ch["head"], 1)
        self.classifier = _ElasticClassifier(ch["head"], space.feature_chs, space.num_classes, dropout)

    def _pairs(self, arch: Arch) -> list[tuple[nn.Module, BlockSpec]]:
        """(elastic module, block spec) for each block of ``arch``, in order."""
        specs = self.space.block_specs(arch)
        modules: list[nn.Module] = [self.stem, self.ds]
        for blocks, depth in zip(self.stages, arch.depths):
            modules.extend(blocks[:depth])
        modules += [self.head, self.classifier]
        assert len(modules) == len(specs)
        return list(zip(modules, specs))

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        for module, spec in self._pairs(arch):
            x = module(x, spec)
        return x

    @torch.no_grad()
    def extract(self, arch: Arch) -> SubNet:
        """A standalone network for ``arch`` carrying copies of the shared weights."""
        net = build_subnet(self.space, arch)
        for block, (module, spec) in zip(net.blocks, self._pairs(arch)):
            params = module.sliced(spec)
            state = block.state_dict()
            missing = {k for k in state if not k.endswith("num_batches_tracked")} - set(params)
            assert not missing, f"extract: no weights for {sorted(missing)} of {spec.key}"
            block.load_state_dict({**state, **{k: v.detach().clone() for k, v in params.items()}})
        net.train(self.training)
        return net

    @torch.no_grad()
    def sort_hidden_units(self) -> None:
        """Order the classifier's hidden units by importance (the L1 norm of each unit's outgoing weights), most
        important first: the largest subnet computes the same, a narrower hidden width keeps the units that
        matter most. For a supernet trained without narrower widths, before training with them."""
        c = self.classifier
        order = c.fc2.weight.abs().sum(0).argsort(descending=True)
        c.fc1.weight.copy_(c.fc1.weight[order])
        c.fc1.bias.copy_(c.fc1.bias[order])
        c.fc2.weight.copy_(c.fc2.weight[:, order])

    def largest(self) -> SubNet:
        return self.extract(self.space.largest())
