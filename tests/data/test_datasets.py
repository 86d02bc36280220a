"""Data sets: built-ins, IDX folders, image folders, .npz; seeded stratified splits; batches."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from edgenas.data import CorruptImageError, augment_batch, batches, load_dataset, make_splits, prepare, resolve_augment


@pytest.mark.parametrize(
    "name, shape, n, classes",
    [("digits", (1, 8, 8), 1797, 10), ("mnist5k", (1, 28, 28), 5000, 10), ("lfw-faces", (1, 25, 25), 200, 2)],
)
def test_builtin_datasets(name, shape, n, classes):
    d = load_dataset(name)
    assert d.images.shape == (n, *shape) and d.images.dtype == np.uint8
    assert d.images.max() > 128  # scaled to 0-255, whatever the source's range
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
    pixels = rng.integers(0, 256, (5, 10, 10))
    np.savez(tmp_path / "a.npz", x=pixels, y=np.array([0, 1, 2, 0, 1]))
    d = load_dataset(str(tmp_path / "a.npz"))
    assert d.images.shape == (5, 1, 10, 10) and d.images.dtype == np.uint8
    assert np.array_equal(d.images[:, 0], pixels)  # 0-255 values kept as they are
    np.savez(tmp_path / "f.npz", x=pixels / 255.0, y=np.array([0, 1, 2, 0, 1]))
    assert np.array_equal(load_dataset(str(tmp_path / "f.npz")).images[:, 0], pixels)  # floats in [0, 1] scaled
    np.savez(tmp_path / "bad.npz", pictures=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="needs arrays 'x' and 'y'"):
        load_dataset(str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def test_prepare_resizes_and_matches_channels():
    imgs = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    x = prepare(imgs, 32, 3, 0.5, 0.25)
    assert tuple(x.shape) == (4, 3, 32, 32)
    assert np.allclose(x[:, 0].numpy(), x[:, 2].numpy())
    d = load_dataset("digits")
    s = make_splits(d)
    got = list(batches(s.train, batch_size=100, resolution=16, channels=1, mean=s.mean, std=s.std, limit=3))
    assert len(got) == 3 and tuple(got[0][0].shape) == (100, 1, 16, 16)


def test_batches_are_normalised_with_the_train_statistics():
    s = make_splits(load_dataset("digits"))
    assert 0.0 < s.mean < 1.0 and 0.0 < s.std < 1.0  # pixels in [0, 1]
    xs = torch.cat([x for x, _ in batches(s.train, batch_size=256, resolution=8, channels=1, mean=s.mean, std=s.std)])
    assert abs(float(xs.mean())) < 1e-3 and abs(float(xs.std()) - 1.0) < 1e-3
    assert xs.dtype == torch.float32 and xs.is_contiguous()


def test_resolve_augment_per_dataset_and_bad_items():
    assert resolve_augment("auto", "fashion-mnist") == ("crop", "flip")
    assert resolve_augment("auto", "digits") == ("crop",)  # a mirrored digit is another digit or none
    assert resolve_augment("none", "fashion-mnist") == ()
    assert resolve_augment(["flip", "crop:3"], "x") == ("flip", "crop:3")
    for bad in (["rotate"], ["crop:x"], ["flip:2"], "sometimes"):
        with pytest.raises(ValueError, match="unknown augmentation"):
            resolve_augment(bad, "x")


def test_crop_takes_a_window_of_the_padded_image_and_flip_mirrors():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(1, 256, (64, 2, 9, 9), dtype=np.uint8))
    out = augment_batch(x, ("crop:2",), np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):  # every output is one 9x9 window of its own padded image, both channels alike
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(padded[i, :, dy : dy + 9, dx : dx + 9], out[i])
        ]
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 10  # the offsets vary
    flipped = augment_batch(x, ("flip",), np.random.default_rng(2))
    same = [torch.equal(flipped[i], x[i]) for i in range(len(x))]
    mirrored = [torch.equal(flipped[i], x[i].flip(-1)) for i in range(len(x))]
    assert all(a or b for a, b in zip(same, mirrored)) and 10 < sum(mirrored) < 54
    again = augment_batch(x, ("crop", "flip"), np.random.default_rng(1))
    assert torch.equal(again, augment_batch(x, ("crop", "flip"), np.random.default_rng(1)))  # seeded


def test_augmented_batches_need_an_rng():
    s = make_splits(load_dataset("digits"))
    with pytest.raises(ValueError, match="need an rng"):
        next(batches(s.train, batch_size=8, resolution=8, channels=1, mean=0.0, std=1.0, augment=("flip",)))


def _folder(root, n_per_class=6, side=12, mode="RGB"):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            shape = (side + i, side + 2 * i, 3) if mode == "RGB" else (side + i, side + 2 * i)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def test_image_folder_is_streamed_and_decoded_per_batch_by_workers(tmp_path):
    d = load_dataset(str(_folder(tmp_path / "imgs")), workers=2)
    assert d.streamed and d.images.shape == (12, 3, 12, 12)  # listed, resized to the smallest side on read
    s = make_splits(d, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert s.train.streamed and 0.0 < s.mean < 1.0
    kw = dict(batch_size=3, resolution=8, channels=3, mean=s.mean, std=s.std)
    in_workers = [(x, y) for x, y in batches(s.train, **kw)]
    s.train.images.workers = 0
    in_process = [(x, y) for x, y in batches(s.train, **kw)]
    assert len(in_workers) == len(in_process) >= 2
    for (xa, ya), (xb, yb) in zip(in_workers, in_process):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert load_dataset(str(tmp_path / "imgs"), size=10).images.shape == (12, 3, 10, 10)


def test_corrupt_image_is_one_error_naming_it_or_skipped_and_counted(tmp_path, monkeypatch):
    import edgenas.data._folder as folder

    root = _folder(tmp_path / "imgs", mode="L")
    bad = root / "b" / "9.png"
    bad.write_bytes(open(root / "b" / "0.png", "rb").read()[:40])  # truncated
    with pytest.raises(CorruptImageError, match=r"cannot read image '.*9\.png'"):
        load_dataset(str(root))  # among the images opened on loading: it stops there
    monkeypatch.setattr(folder, "_PROBE", 2)  # past the first images: found when its batch is read
    d = load_dataset(str(root), workers=0)
    assert d.images.shape[1] == 1  # grayscale folder
    with pytest.raises(CorruptImageError, match=r"cannot read image '.*9\.png'") as err:
        list(batches(d, batch_size=4, resolution=8, channels=1, mean=0.5, std=0.25))
    assert "\n" not in str(err.value)
    for workers in (0, 2):  # in a worker process the message is the same one line
        d = load_dataset(str(root), workers=workers)
        with pytest.raises(CorruptImageError, match=r"9\.png") as err:
            list(batches(d, batch_size=4, resolution=8, channels=1, mean=0.5, std=0.25))
        assert "Traceback" not in str(err.value)
    d = load_dataset(str(root), workers=0, skip_corrupt=True)
    got = list(batches(d, batch_size=4, resolution=8, channels=1, mean=0.5, std=0.25))
    assert sum(len(y) for _, y in got) == 12 and d.images.skipped == {str(bad)}


def test_missing_data_path_says_it_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere" / "imgs"))
