"""Sampling stage: class-balanced generation in resumable shards, merged into an HDF5 store and a
PNG grid, and exported as an ADM-style ``.npz`` plus one PNG per sample for external evaluators.

Batch b of a run always holds the same labels and draws from ``step_generator(seed, b)``, so
the samples do not depend on how the batches are split over shards or jobs (50,000 samples of
a paper-scale run are spread over GPUs as shards; each resumes from its finished batches).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid, save_image

from heptapod.config import SampleConfig
from heptapod.data.images import to_uint8
from heptapod.data.store import merge_parts, open_store, write_part
from heptapod.models.heptapod import Heptapod
from heptapod.tokenizers.stage import load_tokenizer
from heptapod.train import load_generator
from heptapod.utils.blocks import BlockCache, shard_blocks
from heptapod.utils.device import autocast
from heptapod.utils.io import atomic_dir, atomic_path, file_sha256
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


def generate_batch(model: Heptapod, tokenizer: torch.nn.Module, labels: torch.Tensor, cfg: SampleConfig,
                   batch: int) -> np.ndarray:
    """uint8 images (B, C, H, W) of batch number ``batch`` (its randomness: step_generator(seed, batch))."""
    device = next(model.parameters()).device
    with autocast(device):  # bf16 on a GPU, as in training; full precision on a CPU
        tokens = model.sample(labels.to(device), cfg.temperature, step_generator(cfg.seed, batch),
                              positions_per_step=cfg.positions_per_step, steps=cfg.steps)
    return to_uint8(tokenizer.decode(tokens_to_latents(tokens, model.spec.grid_size)))


def generate(model: Heptapod, tokenizer: torch.nn.Module, labels: torch.Tensor, cfg: SampleConfig) -> np.ndarray:
    """uint8 images (N, C, H, W) for ``labels``, in memory (snapshot curves, tests)."""
    out = []
    bar = progress(len(labels), desc="sample", unit="img")
    for b, sl in enumerate(batches(len(labels), cfg.batch_size)):
        out.append(generate_batch(model, tokenizer, labels[sl], cfg, b))
        bar.update(sl.stop - sl.start)
    bar.close()
    return np.concatenate(out)


def grid_rows_of(labels: np.ndarray, rows: int, per_row: int = 10) -> np.ndarray:
    """Indices of the samples a PNG grid shows: the first ``per_row`` of each of the first
    ``rows`` classes, class by class (as many per class as the rarest of them has)."""
    per_row = min(per_row, *(int(np.sum(labels == c)) for c in range(rows)))
    return np.array([i for c in range(rows) for i in np.flatnonzero(labels == c)[:per_row]])


def save_grid(images: np.ndarray, labels: np.ndarray, rows: int, path: str | Path, per_row: int = 10) -> None:
    """PNG grid: one row per class (the first ``rows`` classes), ``per_row`` samples each."""
    picked = grid_rows_of(labels, rows, per_row)
    grid = make_grid(torch.from_numpy(images[picked]).float() / 255, nrow=len(picked) // rows, padding=1,
                     pad_value=0.5)
    with atomic_path(path) as tmp:
        save_image(grid, tmp)


def sample_shard(cfg: SampleConfig, generator_path: str | Path, tokenizer_path: str | Path, out: str | Path,
                 shard: int = 0, shards: int = 1, device: torch.device | None = None) -> dict:
    """Generate shard ``shard`` of ``shards`` of a run's samples into a part store."""
    device = device or torch.device("cpu")
    model = load_generator(generator_path, cfg.use_ema).to(device)
    tokenizer = load_tokenizer(tokenizer_path).to(device)
    labels = balanced_labels(cfg.num_samples, model.spec.num_classes)
    slices = list(batches(len(labels), cfg.batch_size))
    blocks = shard_blocks(len(slices), shard, shards)
    meta = {"generator": str(generator_path), "generator_sha256": file_sha256(generator_path),
            "tokenizer_sha256": file_sha256(tokenizer_path), "temperature": cfg.temperature,
            "use_ema": cfg.use_ema, "seed": cfg.seed, "positions_per_step": cfg.positions_per_step,
            "sampling_steps": cfg.steps or 0}  # 0: positions_per_step at a time
    cache = BlockCache(Path(f"{out}.blocks"), json.dumps({"sample": dataclasses.asdict(cfg), **meta,
                                                         "shard": shard, "shards": shards}, sort_keys=True))

    def draw(b: int) -> dict[str, np.ndarray]:
        return {"images": generate_batch(model, tokenizer, labels[slices[b]], cfg, b),
                "labels": labels[slices[b]].numpy()}

    t0 = time.perf_counter()
    cache.compute(blocks, draw, lambda b: slices[b].stop - slices[b].start, f"sample {shard + 1}/{shards}")
    seconds = time.perf_counter() - t0
    lo = slices[blocks[0]].start if blocks else 0
    hi = slices[blocks[-1]].stop if blocks else 0
    side = model.spec.grid_size * tokenizer.spec.downsample
    write_part(out, "samples", {**meta, "seconds": seconds}, shard, shards, (lo, hi),
               {"images": ((tokenizer.spec.channels, side, side), np.uint8), "labels": ((), np.int64)},
               ((slices[b].start, cache.load(b)) for b in blocks))
    cache.clear()
    return {"samples": hi - lo, "seconds": seconds, "images_per_s": (hi - lo) / seconds if seconds else None}


def merge_samples(parts: list[str | Path], out: str | Path, grid_png: str | Path, grid_rows: int) -> dict:
    """Join the part stores of shards 0..K-1 into the run's samples store and its PNG grid."""
    attrs, n = merge_parts(parts, out, "samples", ("generator_sha256", "tokenizer_sha256"), summed=("seconds",))
    with open_store(out, "samples", ("images", "labels")) as f:
        labels = f["labels"][:]
        rows = min(grid_rows, int(labels.max()) + 1)
        picked = np.sort(grid_rows_of(labels, rows))
        save_grid(f["images"][picked], labels[picked], rows, grid_png)
    return {"samples": n, "parts": len(parts), "generation_s": attrs["seconds"]}


def export_samples(samples_path: str | Path, npz_out: str | Path, png_dir: str | Path, chunk: int = 1000) -> dict:
    """ADM's sample format (arr_0 (N, H, W, 3) uint8, gray repeated; arr_1 labels) and one PNG
    per sample (``<index>_<label>.png``), for evaluators outside the pipeline. Streams in chunks
    (50,000 ImageNet samples are ~10 GB): the npz's array is assembled in a memory-mapped file."""
    with open_store(samples_path, "samples", ("images", "labels")) as f, \
            atomic_dir(png_dir) as pngs, atomic_path(npz_out) as tmp_npz, \
            tempfile.TemporaryDirectory(dir=Path(npz_out).parent) as scratch:
        n, _, h, w = f["images"].shape
        labels = f["labels"][:]
        arr = np.lib.format.open_memmap(Path(scratch) / "arr_0.npy", mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
        for lo in range(0, n, chunk):
            images = f["images"][lo:lo + chunk].transpose(0, 2, 3, 1)
            arr[lo:lo + len(images)] = images  # a gray channel broadcasts to RGB
            for i, img in enumerate(arr[lo:lo + len(images)], start=lo):
                Image.fromarray(img).save(pngs / f"{i:06d}_{labels[i]}.png")
        arr.flush()
        with open(tmp_npz, "wb") as out:
            np.savez(out, arr_0=arr, arr_1=labels)  # numpy writes a memmap to a zip in buffered pieces
        del arr
    return {"samples": int(n), "shape": [int(n), int(h), int(w), 3]}
