"""Sampling stage: class-balanced generation, decoding to images, an HDF5 store and a PNG grid."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from heptapod.config import SampleConfig
from heptapod.data.images import to_uint8
from heptapod.data.store import write_arrays
from heptapod.models.heptapod import Heptapod
from heptapod.train import load_generator
from heptapod.tokenizers.stage import load_tokenizer
from heptapod.utils.io import atomic_path
from heptapod.utils.training import batches, progress, step_generator


def balanced_labels(num_samples: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ... so every class gets num_samples / K samples (±1)."""
    return torch.arange(num_samples) % num_classes


@torch.no_grad()
def tokens_to_latents(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, N) ids -> (B, G, G); (B, N, C) continuous tokens -> (B, C, G, G), as decoders take them."""
    if tokens.dim() == 2:
        return tokens.view(-1, grid, grid)
    return tokens.transpose(1, 2).reshape(len(tokens), -1, grid, grid)


def generate(model: Heptapod, tokenizer: torch.nn.Module, labels: torch.Tensor, cfg: SampleConfig) -> np.ndarray:
    """uint8 images (N, C, H, W) for ``labels``; batch b draws from step_generator(seed, b)."""
    g = model.spec.grid_size
    device = next(model.parameters()).device
    out = []
    bar = progress(len(labels), desc="sample")
    for b, sl in enumerate(batches(len(labels), cfg.batch_size)):
        tokens = model.sample(labels[sl].to(device), cfg.temperature, step_generator(cfg.seed, b))
        out.append(to_uint8(tokenizer.decode(tokens_to_latents(tokens, g))))
        bar.update(sl.stop - sl.start)
    bar.close()
    return np.concatenate(out)


def save_grid(images: np.ndarray, labels: np.ndarray, rows: int, path: str | Path, per_row: int = 10) -> None:
    """PNG grid: one row per class (the first ``rows`` classes), ``per_row`` samples each."""
    per_row = min(per_row, *(int(np.sum(labels == c)) for c in range(rows)))
    picked = [i for c in range(rows) for i in np.flatnonzero(labels == c)[:per_row]]
    grid = make_grid(torch.from_numpy(images[picked]).float() / 255, nrow=per_row, padding=1, pad_value=0.5)
    with atomic_path(path) as tmp:
        save_image(grid, tmp)


def sample_stage(cfg: SampleConfig, generator_path: str | Path, tokenizer_path: str | Path,
                 out: str | Path, grid_png: str | Path, device: torch.device | None = None) -> dict:
    device = device or torch.device("cpu")
    model = load_generator(generator_path, cfg.use_ema).to(device)
    tokenizer = load_tokenizer(tokenizer_path).to(device)
    labels = balanced_labels(cfg.num_samples, model.spec.num_classes)
    t0 = time.perf_counter()
    images = generate(model, tokenizer, labels, cfg)
    seconds = time.perf_counter() - t0
    write_arrays(out, "samples", {"images": images, "labels": labels.numpy()},
                 {"generator": str(generator_path), "temperature": cfg.temperature,
                  "use_ema": cfg.use_ema, "seed": cfg.seed, "seconds": seconds})
    save_grid(images, labels.numpy(), min(cfg.grid_rows, model.spec.num_classes), grid_png)
    return {"samples": len(images), "seconds": seconds, "images_per_s": len(images) / seconds}


def export_npz(samples_path: str | Path, out: str | Path) -> dict:
    """ADM's sample format: arr_0 (N, H, W, 3) uint8 (gray repeated), arr_1 (N,) class labels."""
    from heptapod.data.store import read_arrays

    arrays, _ = read_arrays(samples_path, "samples", ("images", "labels"))
    images = arrays["images"].transpose(0, 2, 3, 1)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, arr_0=images, arr_1=arrays["labels"])
    return {"samples": len(images), "shape": list(images.shape)}
