"""Params and FLOPs of an arch: one walk over its blocks, each block counted once and cached.

FLOPs follow fvcore's convention: one multiply-add of a convolution or linear layer counts
as one FLOP (so they are MACs). BatchNorm is not counted (it is folded into the
convolutions on export), and fvcore skips element-wise work (hardswish, hardsigmoid, the
SE product, residual adds) and counts pooling as nothing; on these nets that is a few
percent of the conv work, left out on purpose so figures compare with the MobileNetV3
paper's "MAdds". They are computed by :func:`spec_macs` (arithmetic, equal to fvcore's
count for every block: tested), since tracing each new block with fvcore cost 60 ms, the
larger part of a search trial's own time. Params are the torch module's (BatchNorm
weight and bias included).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from edgenas.search_spaces._arch import Arch
from edgenas.search_spaces._blocks import build_block
from edgenas.search_spaces._space import BlockSpec, Space, spec_macs

__all__ = ["ArchProfile", "block_profile", "profile_arch"]

_MATRIX_OPS = ("conv", "linear", "addmm", "matmul", "bmm", "einsum")


@dataclass(frozen=True)
class ArchProfile:
    """Per block and in all: torch parameters as trained (BatchNorm separate) and FLOPs.

    Deployed models fold BatchNorm into the convolutions: their count is
    :func:`~edgenas.search_spaces.footprint`'s ``params`` (what trials and reports show).
    """

    params: int
    flops: int
    blocks: tuple[tuple[BlockSpec, int, int], ...]  # (spec, params, flops) per block


@lru_cache(maxsize=65536)
def block_profile(spec: BlockSpec) -> tuple[int, int]:
    """(params, FLOPs) of one block at batch 1."""
    return sum(p.numel() for p in build_block(spec).parameters()), spec_macs(spec)


def fvcore_flops(spec: BlockSpec) -> int:
    """The block's FLOPs as fvcore counts them by tracing (the reference :func:`spec_macs` is tested against)."""
    from fvcore.nn import FlopCountAnalysis

    module = build_block(spec).eval()
    x = torch.zeros(1, spec.in_chs, spec.in_size, spec.in_size)
    analysis = FlopCountAnalysis(module, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    # BatchNorm is folded into the convolutions on export: count only the matrix work.
    return int(sum(v for k, v in analysis.by_operator().items() if k in _MATRIX_OPS))


def profile_arch(space: Space, arch: Arch) -> ArchProfile:
    rows = tuple((spec, *block_profile(spec)) for spec in space.block_specs(arch))
    return ArchProfile(params=sum(r[1] for r in rows), flops=sum(r[2] for r in rows), blocks=rows)
