"""The models a latency table times: single blocks, whole subnets, the reference, the no-op;
in the format of the runtime that times them (ONNX unless told: ``fmt``).

Weights are random but deterministic (seeded by what is exported), BatchNorm statistics
too, so that a table's models are reproducible and their values are like a trained
model's. The exported graph itself does not depend on the values
(:func:`edgenas.export.unshare_initializers`).
"""

from __future__ import annotations

import functools
import zlib

import torch
from torch import nn

from edgenas.export import export_for
from edgenas.latency_tables._protocol import noop_model
from edgenas.search_spaces import Arch, BlockSpec, Space, SubNet, build_block, build_subnet, current_specs

__all__ = ["REFERENCE_SPECS", "arch_model", "block_model", "noop_for", "pruned_arch_model", "reference_model"]

# A fixed three-block net (~0.5 ms on one 2020s x86 core) timed beside everything else to
# track the device's speed of the moment.
REFERENCE_SPECS = (
    BlockSpec("ir", 32, 32, 32, 3, 1, 128, False, "relu6"),
    BlockSpec("ir", 32, 32, 32, 5, 1, 128, True, "hswish"),
    BlockSpec("ir", 32, 48, 32, 3, 2, 128, False, "hswish"),
)


def _randomised(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return module.eval()


def _seed(text: str) -> int:
    return zlib.crc32(text.encode())


def block_model(spec: BlockSpec, precision: str, fmt: str = "onnx") -> bytes:
    module = _randomised(build_block(spec), _seed(spec.key))
    return export_for(fmt, module, (1, spec.in_chs, spec.in_size, spec.in_size), precision=precision)


def arch_model(space: Space, arch: Arch, precision: str, fmt: str = "onnx") -> bytes:
    net = _randomised(build_subnet(space, arch), _seed(str(arch)))
    return export_for(fmt, net, net.input_shape, precision=precision)


def pruned_arch_model(
    space: Space, arch: Arch, share: float, precision: str, fmt: str = "onnx"
) -> tuple[bytes, tuple[BlockSpec, ...]]:
    """``arch`` with ``share`` of its channels pruned as finalize prunes (L1, multiples of 8): the model and
    its blocks, whose channel counts the space's archs do not have."""
    from edgenas.config import PruneConfig
    from edgenas.pruning import progressive_prune

    net = _randomised(build_subnet(space, arch), _seed(str(arch)))
    pruned, _ = progressive_prune(
        net,
        torch.zeros(net.input_shape),
        PruneConfig(step=share, max_steps=1, tolerance=1.0),
        finetune=lambda m: None,
        evaluate=lambda m: 1.0,
    )
    return export_for(fmt, pruned, net.input_shape, precision=precision), tuple(current_specs(pruned))


@functools.cache  # the same bytes every time (seeded), and an ExecuTorch int8 export costs ~15 s
def reference_model(precision: str, fmt: str = "onnx") -> bytes:
    net = _randomised(SubNet(REFERENCE_SPECS, "reference"), 0)
    return export_for(fmt, net, net.input_shape, precision=precision)


class _Noop(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)  # on one float: the cost of a call (an Identity would be optimised away)


@functools.cache
def noop_for(fmt: str) -> bytes:
    """The per-call overhead model in a format (ONNX's is a constant the device side keeps)."""
    return noop_model() if fmt == "onnx" else export_for(fmt, _Noop(), (1, 1, 1, 1))
