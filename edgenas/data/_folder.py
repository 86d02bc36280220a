"""Image folders streamed from disk: files are listed, never loaded whole, and decoded per batch.

``ROOT/<class>/<image>`` of any size becomes an :class:`ImageFiles`, an array-like of
uint8 images that :class:`~edgenas.data.ImageData` holds in place of an array. Indexing it
gives a lazy subset (splits cost nothing); :meth:`ImageFiles.read` decodes a batch: open,
convert to the folder's mode (grayscale or RGB), resize to the folder's side. The batch
iterator runs ``read`` in worker processes (:func:`read_ahead`), so decoding overlaps
training.

A file that cannot be read is one error naming it, or, with ``skip_corrupt``, left out of
its batch, reported once on stderr and counted (:attr:`ImageFiles.skipped`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "CorruptImageError", "ImageFiles", "list_image_folder", "read_ahead"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GRAY_MODES = ("L", "1", "I;16", "I", "LA", "F")
_PROBE = 64  # images opened to choose the mode and side when none is given


class CorruptImageError(ValueError):
    """An image file that cannot be decoded (the message names the file)."""


def list_image_folder(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Every image of ``ROOT/<class>/<image>`` (sorted), its class index, and the class names."""
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise ValueError(f"image folder {str(root)!r} has no class sub-folders (expected ROOT/<class>/<image>)")
    paths: list[Path] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        files = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [i] * len(files)
    if not paths:
        raise ValueError(f"image folder {str(root)!r} has no images with suffixes {IMAGE_SUFFIXES}")
    return paths, labels, classes


def open_image(path: Path):
    from PIL import Image

    try:
        im = Image.open(path)
        im.load()  # decode now: a truncated file fails here, not later
        return im
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for unreadable, truncated, bad headers
        raise CorruptImageError(f"cannot read image {str(path)!r}: {exc}") from None


class ImageFiles:
    """uint8 images (N, C, side, side) that live in files: ``files[index]`` is a lazy subset, ``read`` decodes."""

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(
        self, paths: Sequence[Path | str], *, channels: int, side: int, skip_corrupt: bool = False, workers: int = 2
    ):
        self.paths = tuple(str(p) for p in paths)
        self.channels = channels
        self.side = side
        self.skip_corrupt = skip_corrupt
        self.workers = workers
        self.skipped: set[str] = set()

    @classmethod
    def probe(
        cls, paths: Sequence[Path], *, side: int | None = None, skip_corrupt: bool = False, workers: int = 2
    ) -> ImageFiles:
        """Choose grayscale or RGB, and the side (default: the smallest side), from the first images.

        A bad file among them stops here already (or is passed over with ``skip_corrupt``).
        """
        seen = []
        for p in paths[:_PROBE]:
            try:
                seen.append(open_image(p))
            except CorruptImageError:
                if not skip_corrupt:
                    raise
        if not seen:
            raise CorruptImageError(
                f"none of the first {min(len(paths), _PROBE)} images can be read (first: {str(paths[0])!r})"
            )
        channels = 1 if all(im.mode in _GRAY_MODES for im in seen) else 3
        side = side or min(min(im.size) for im in seen)
        return cls(paths, channels=channels, side=side, skip_corrupt=skip_corrupt, workers=workers)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.channels, self.side, self.side)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> ImageFiles:
        picked = np.asarray(self.paths, dtype=object)[index]
        return ImageFiles(
            list(np.atleast_1d(picked)),
            channels=self.channels,
            side=self.side,
            skip_corrupt=self.skip_corrupt,
            workers=self.workers,
        )

    def read(self, index: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pixels of the readable images, mask over ``index`` of those read); raises on a bad file unless skipping."""
        from PIL import Image

        out, ok = [], []
        for i in np.asarray(index).reshape(-1):
            try:
                im = open_image(Path(self.paths[i]))
            except CorruptImageError:
                if not self.skip_corrupt:
                    raise
                ok.append(False)
                continue
            im = im.convert("L" if self.channels == 1 else "RGB")
            if im.size != (self.side, self.side):
                im = im.resize((self.side, self.side), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
            out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
            ok.append(True)
        pixels = np.stack(out) if out else np.zeros((0, *self.shape[1:]), dtype=np.uint8)
        return pixels, np.array(ok, dtype=bool)

    def note_skipped(self, index: np.ndarray, ok: np.ndarray) -> None:
        for i in np.asarray(index)[~ok]:
            path = self.paths[i]
            if path not in self.skipped:
                self.skipped.add(path)
                logger.warning(f"edgenas: skipped unreadable image {path!r} ({len(self.skipped)} so far)")


class _Batches:
    """A map-style dataset whose items are whole batches of decoded files (for DataLoader workers)."""

    def __init__(self, files: ImageFiles, index_batches: list[np.ndarray]):
        self.files, self.index_batches = files, index_batches

    def __len__(self) -> int:
        return len(self.index_batches)

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray] | str:
        try:
            return self.files.read(self.index_batches[k])
        except CorruptImageError as exc:  # its message, not a worker's traceback, goes to the user
            return str(exc)


def read_ahead(files: ImageFiles, index_batches: list[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(pixels, ok mask) per batch of indices, decoded by ``files.workers`` processes in order, ahead of use."""
    if files.workers <= 0 or len(index_batches) <= 1:
        for idx in index_batches:
            yield files.read(idx)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _Batches(files, index_batches),
        batch_size=None,
        shuffle=False,
        num_workers=min(files.workers, len(index_batches)),
        prefetch_factor=2,
    )
    for item in loader:
        if isinstance(item, str):
            raise CorruptImageError(item)
        pixels, ok = item
        yield np.asarray(pixels), np.asarray(ok)
