"""Tokenizer stages: train the VQ tokenizer, report its reconstruction, extract latents to HDF5."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from heptapod.config import Config, fingerprint
from heptapod.data.images import load_images, to_float, to_uint8
from heptapod.data.store import H5Writer
from heptapod.tokenizers.vq import TOKENIZERS, TokenizerSpec, build_tokenizer
from heptapod.utils.io import load_checkpoint, save_checkpoint
from heptapod.utils.training import Resumable, batches, check_finite, progress, step_generator


def train_tokenizer(cfg: Config, kind: str, train_images: str | Path, out: str | Path) -> dict:
    """Train on the train split; resumable from ``<out>.state`` (removed when done)."""
    tc = cfg.tokenizer
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer kind '{kind}' (known: {', '.join(TOKENIZERS)})")
    images, _, _ = load_images(train_images)
    torch.manual_seed(tc.seed)
    model = build_tokenizer(TokenizerSpec.from_config(tc, images.shape[1], kind))
    if kind == "vq":
        model.init_codebook(to_float(images[:1024]), step_generator(tc.seed, -1))
    weight = tc.commitment if kind == "vq" else tc.kl_weight
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    state = Resumable(Path(out).with_suffix(".state.pt"), "tokenizer-state",
                      fingerprint(cfg, "data", "tokenizer") + kind)
    start = state.load({"model": model, "opt": opt})
    bar = progress(tc.steps, start, "tokenizer")
    stats: dict = {}
    t0 = time.perf_counter()
    for step in range(start, tc.steps):
        gen = step_generator(tc.seed, step)
        idx = torch.randint(0, len(images), (tc.batch_size,), generator=gen).numpy()
        x = to_float(images[idx])
        torch.manual_seed(tc.seed * 1_000_003 + step)  # the KL's sampling noise, per step
        _, loss, stats = model(x, weight)
        check_finite(loss, step, "tokenizer")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update()
        bar.set_postfix(mse=f"{stats['rec_mse']:.4f}")
        if (step + 1) % 200 == 0 and step + 1 < tc.steps:
            state.save(step + 1, {"model": model, "opt": opt})
    bar.close()
    if kind == "kl":
        model.calibrate(to_float(images[:2048]))
    save_checkpoint(out, {"kind": "tokenizer", "spec": model.spec_dict(), "state_dict": model.state_dict()})
    state.path.unlink(missing_ok=True)
    return {"steps": tc.steps, "seconds": time.perf_counter() - t0, "last_batch": stats}


def load_tokenizer(path: str | Path) -> torch.nn.Module:
    ckpt = load_checkpoint(path, "tokenizer")
    model = build_tokenizer(TokenizerSpec(**ckpt["spec"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def reconstruct(model: torch.nn.Module, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images -> (uint8 reconstructions, codes or scaled latent means)."""
    recon, codes = [], []
    for sl in batches(len(images), batch_size):
        c = model.encode(to_float(images[sl]))
        codes.append(c.numpy())
        recon.append(to_uint8(model.decode(c)))
    return np.concatenate(recon), np.concatenate(codes)


@torch.no_grad()
def extract_latents(cfg: Config, tokenizer_path: str | Path, images_path: str | Path,
                    out: str | Path) -> dict:
    """Encode every image and its horizontal flip into a latent store (rows shuffled)."""
    model = load_tokenizer(tokenizer_path)
    images, labels, attrs = load_images(images_path)
    n, grid = len(images), images.shape[-1] // model.spec.downsample
    perm = np.random.default_rng(cfg.latents.seed).permutation(n)
    discrete = model.spec.kind == "vq"
    meta = {
        "tokenizer": model.spec.kind, "tokenizer_checkpoint": str(tokenizer_path),
        "tokenizer_sha256": file_sha256(tokenizer_path), "grid_size": grid,
        "vocab_size": model.spec.codebook_size if discrete else 0,
        "token_dim": 1 if discrete else model.spec.code_dim, "num_classes": attrs["num_classes"],
        "latent_scale": model.latent_scale, "dataset": attrs["dataset"], "split": attrs["split"],
        "row_shuffle_seed": cfg.latents.seed, "views": "image, horizontal flip",
    }
    # VQ: codes; KL: the posterior moments (mean, log-variance), so training can draw a new
    # latent from them every time (as MAR's cached latents do)
    name, dtype = ("codes", np.int16) if discrete else ("moments", np.float32)
    shape = (n, 2, grid, grid) if discrete else (n, 2, 2 * model.spec.code_dim, grid, grid)
    encode = model.encode if discrete else model.moments
    t0 = time.perf_counter()
    with H5Writer(out, "latents", meta, cfg.latents.chunk_rows) as w:
        data = w.create(name, shape, dtype)
        w.create("labels", (n,), np.int64)[...] = labels[perm]
        bar = progress(n, desc="latents")
        for sl in batches(n, cfg.latents.batch_size):
            x = to_float(images[perm[sl]])
            data[sl] = torch.stack([encode(x), encode(x.flip(-1))], dim=1).numpy().astype(dtype)
            bar.update(sl.stop - sl.start)
        bar.close()
    seconds = time.perf_counter() - t0
    return {"images": n, "grid_size": grid, "seconds": seconds, "images_per_s": n / seconds}
