"""Data stage: turn a raw image dataset into an HDF5 image store per split.

Embedded default: Fashion-MNIST (standard IDX files, as shipped by Debian's
``dataset-fashion-mnist`` package). Any ImageFolder tree (``root/<split>/<class>/*.png``)
works through the same stage.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from heptapod.config import DataConfig
from heptapod.data.store import read_arrays, write_arrays

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


def _pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (the background is black) square images to ``size`` pixels."""
    h = images.shape[-1]
    if size < h:
        raise ValueError(f"data.image_size {size} is smaller than the images ({h})")
    lo = (size - h) // 2
    out = np.zeros((*images.shape[:2], size, size), dtype=images.dtype)
    out[..., lo:lo + h, lo:lo + h] = images
    return out


def _image_folder(cfg: DataConfig, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image

    if not cfg.root:
        raise DataNotFoundError("data.root must name the ImageFolder tree for dataset 'image_folder'")
    folder = Path(cfg.root) / split
    if not folder.is_dir():
        raise DataNotFoundError(f"image folder not found: {folder} (expected {folder}/<class>/*.png)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    mode = "L" if cfg.channels == 1 else "RGB"
    for label, name in enumerate(classes):
        for file in sorted((folder / name).iterdir()):
            if file.suffix.lower() not in {".png", ".jpg", ".jpeg", ".bmp", ".webp"}:
                continue
            with Image.open(file) as im:
                im = _center_crop_resize(im.convert(mode), cfg.image_size)
            arr = np.asarray(im, dtype=np.uint8)
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataNotFoundError(f"no images found under {folder}")
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def _center_crop_resize(im, size: int):
    """ADM-style: downsample by halving while large, then bicubic resize and center crop."""
    from PIL import Image

    while min(im.size) >= 2 * size:
        im = im.resize(tuple(x // 2 for x in im.size), resample=Image.BOX)
    scale = size / min(im.size)
    im = im.resize(tuple(round(x * scale) for x in im.size), resample=Image.BICUBIC)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    return im.crop((left, top, left + size, top + size))


LOADERS = {"fashion_mnist": _fashion_mnist, "image_folder": _image_folder}


def prepare(cfg: DataConfig, split: str, out: str | Path) -> dict:
    """Write ``out`` (kind 'images'): images (N, C, H, W) uint8 and labels (N,)."""
    if cfg.dataset not in LOADERS:
        raise ValueError(f"data.dataset: unknown dataset '{cfg.dataset}' (known: {', '.join(LOADERS)})")
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
    images, labels, classes = LOADERS[cfg.dataset](cfg, split)
    images, labels = images[:cfg.max_images], labels[:cfg.max_images]
    if images.shape[1] != cfg.channels:
        raise ValueError(f"data.channels is {cfg.channels} but the images have {images.shape[1]}")
    attrs = {"dataset": cfg.dataset, "split": split, "num_classes": len(classes),
             "class_names": classes, "image_size": cfg.image_size}
    write_arrays(out, "images", {"images": images, "labels": labels}, attrs)
    return {"images": len(images), **attrs}


def load_images(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    arrays, attrs = read_arrays(path, "images", ("images", "labels"), limit)
    return arrays["images"], arrays["labels"], attrs


def to_float(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [-1, 1]."""
    return torch.as_tensor(images_uint8).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float in [-1, 1] -> uint8 array."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu().numpy()
