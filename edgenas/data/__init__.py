"""Data: the offline built-in data sets, user image folders (streamed) / .npz arrays, seeded splits, batches."""

from __future__ import annotations

from edgenas.data._datasets import BUILTIN_DATASETS, ImageData, load_dataset, load_idx_folder, to_uint8
from edgenas.data._folder import CorruptImageError, ImageFiles
from edgenas.data._splits import AUGMENTATIONS, Splits, augment_batch, batches, make_splits, prepare, resolve_augment

__all__ = [
    "AUGMENTATIONS",
    "BUILTIN_DATASETS",
    "CorruptImageError",
    "ImageData",
    "ImageFiles",
    "Splits",
    "augment_batch",
    "batches",
    "load_dataset",
    "load_idx_folder",
    "make_splits",
    "prepare",
    "resolve_augment",
    "to_uint8",
]
