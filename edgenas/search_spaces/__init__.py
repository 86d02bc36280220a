"""Search spaces: blocks, the arch encoding, spaces as data, the supernet and subnet extraction.

Nothing in this package reads or writes files: spaces load from plain data
(:meth:`Space.from_dict`), and the callers own the I/O.
"""

from __future__ import annotations

from edgenas.search_spaces._arch import Arch, BlockChoice
from edgenas.search_spaces._blocks import (
    Classifier,
    ConvBNAct,
    DepthwiseSeparable,
    InvertedResidual,
    SqueezeExcite,
    SubNet,
    build_block,
    build_subnet,
    current_specs,
)
from edgenas.search_spaces._builtin import SPACES, get_space, reference_archs
from edgenas.search_spaces._footprint import (
    KB,
    Footprint,
    footprint,
    model_bytes,
    net_footprint,
    peak_activation_bytes,
)
from edgenas.search_spaces._profile import ArchProfile, profile_arch
from edgenas.search_spaces._space import BlockSpec, Space, StageSpec, make_divisible, spec_macs, spec_params
from edgenas.search_spaces._supernet import Supernet

__all__ = [
    "SPACES",
    "Arch",
    "ArchProfile",
    "BlockChoice",
    "Classifier",
    "ConvBNAct",
    "DepthwiseSeparable",
    "InvertedResidual",
    "SqueezeExcite",
    "KB",
    "BlockSpec",
    "Space",
    "StageSpec",
    "SubNet",
    "Supernet",
    "Footprint",
    "build_block",
    "build_subnet",
    "current_specs",
    "footprint",
    "get_space",
    "make_divisible",
    "model_bytes",
    "net_footprint",
    "peak_activation_bytes",
    "profile_arch",
    "reference_archs",
    "spec_macs",
    "spec_params",
]
