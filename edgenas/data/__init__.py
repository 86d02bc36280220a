"""Data: the offline built-in data sets, user image folders (streamed) / .npz arrays, seeded splits, batches.

Loading and splitting need numpy alone; batches (``_batches``) need torch and are imported on
first use (PEP 562), so ``edgenas predict`` can load a data set without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgenas.config import AUGMENTATIONS, resolve_augment
from edgenas.data._datasets import BUILTIN_DATASETS, ImageData, load_dataset, load_idx_folder, to_uint8
from edgenas.data._folder import IMAGE_SUFFIXES, CorruptImageError, ImageFiles, open_image
from edgenas.data._split import Splits, make_splits

_LAZY = {name: "_batches" for name in ("augment_batch", "batches", "prepare")}

__all__ = [
    "AUGMENTATIONS",
    "BUILTIN_DATASETS",
    "IMAGE_SUFFIXES",
    "CorruptImageError",
    "ImageData",
    "ImageFiles",
    "Splits",
    "load_dataset",
    "load_idx_folder",
    "make_splits",
    "open_image",
    "resolve_augment",
    "to_uint8",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
