"""Data: the offline built-in data sets, user image folders / .npz arrays, seeded splits, batches."""

from __future__ import annotations

from edgenas.data._datasets import BUILTIN_DATASETS, ImageData, load_dataset, load_idx_folder
from edgenas.data._splits import Splits, batches, make_splits, prepare

__all__ = [
    "BUILTIN_DATASETS",
    "ImageData",
    "Splits",
    "batches",
    "load_dataset",
    "load_idx_folder",
    "make_splits",
    "prepare",
]
