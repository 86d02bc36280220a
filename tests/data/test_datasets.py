"""Data sets: built-ins, IDX folders, image folders, .npz; seeded stratified splits; batches."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from edgenas.data import batches, load_dataset, make_splits, prepare


@pytest.mark.parametrize("name, shape, n, classes", [("digits", (1, 8, 8), 1797, 10),
                                                      ("mnist5k", (1, 28, 28), 5000, 10),
                                                      ("lfw-faces", (1, 25, 25), 200, 2)])  # fmt: skip
def test_builtin_datasets(name, shape, n, classes):
    d = load_dataset(name)
    assert d.images.shape == (n, *shape) and d.images.dtype == np.float32
    assert 0.0 <= d.images.min() and d.images.max() <= 1.0
    assert len(d.classes) == classes and set(np.unique(d.labels)) == set(range(classes))


def test_splits_are_seeded_stratified_and_disjoint():
    d = load_dataset("digits")
    a, b = make_splits(d, seed=3), make_splits(d, seed=3)
    assert np.array_equal(a.val.labels, b.val.labels) and np.array_equal(a.train.images, b.train.images)
    c = make_splits(d, seed=4)
    assert not np.array_equal(a.val.images, c.val.images)
    n = len(a.train.labels) + len(a.val.labels) + len(a.test.labels)
    assert n == len(d.labels)
    # every class is in every split, in about the same proportion
    for part in (a.val, a.test):
        counts = np.bincount(part.labels, minlength=10)
        assert counts.min() >= 0.6 * counts.max()
    # no image in two splits
    rows = {img.tobytes() for img in a.train.images}
    assert not any(img.tobytes() in rows for img in a.test.images if (d.images == img).all(axis=(1, 2, 3)).sum() == 1)
    limited = make_splits(d, seed=3, train_limit=200)
    assert len(limited.train.labels) == 200 and len(np.unique(limited.train.labels)) == 10


def test_bad_split_settings():
    d = load_dataset("digits")
    with pytest.raises(ValueError, match="val_fraction must be in"):
        make_splits(d, val_fraction=0.7)


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_folder_and_missing_fashion_mnist(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 10)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 4)
    d = load_dataset("fashion-mnist", root=str(tmp_path))
    assert d.images.shape == (40, 1, 28, 28) and d.test is not None and len(d.test.labels) == 10
    assert d.classes[0] == "t-shirt"
    s = make_splits(d, seed=0)
    assert len(s.test.labels) == 10  # the data set's own test split is kept
    generic = load_dataset(str(tmp_path))
    assert generic.images.shape == (40, 1, 28, 28)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=str(tmp_path / "nowhere"))


def test_image_folder_and_npz(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    d = load_dataset(str(tmp_path / "imgs"))
    assert d.images.shape == (6, 3, 12, 12) and d.classes == ("cat", "dog")
    np.savez(tmp_path / "a.npz", x=rng.integers(0, 256, (5, 10, 10)), y=np.array([0, 1, 2, 0, 1]))
    d = load_dataset(str(tmp_path / "a.npz"))
    assert d.images.shape == (5, 1, 10, 10) and d.images.max() <= 1.0
    np.savez(tmp_path / "bad.npz", pictures=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="needs arrays 'x' and 'y'"):
        load_dataset(str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def test_prepare_resizes_and_matches_channels():
    imgs = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    x = prepare(imgs, 32, 3, 0.5, 0.25)
    assert tuple(x.shape) == (4, 3, 32, 32)
    assert np.allclose(x[:, 0].numpy(), x[:, 2].numpy())
    d = load_dataset("digits")
    s = make_splits(d)
    got = list(batches(s.train, batch_size=100, resolution=16, channels=1, mean=s.mean, std=s.std, limit=3))
    assert len(got) == 3 and tuple(got[0][0].shape) == (100, 1, 16, 16)
