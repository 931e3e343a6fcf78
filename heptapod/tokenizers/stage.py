"""Tokenizer stages: train (or import) a tokenizer, extract latents to HDF5 in resumable shards."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from heptapod.config import Config, fingerprint
from heptapod.data.images import ImageSet, batch_as_is, load_images, to_float, to_uint8
from heptapod.data.store import merge_parts, write_part
from heptapod.tokenizers.published import LlamaGenVQConfig, MARKLConfig, build_published, load_published
from heptapod.tokenizers.vq import TOKENIZERS, TokenizerSpec, build_tokenizer
from heptapod.utils.blocks import BlockCache, shard_blocks
from heptapod.utils.device import resolve_device
from heptapod.utils.io import CheckpointError, copy_pinned, file_sha256, load_checkpoint, save_checkpoint
from heptapod.utils.training import Resumable, batches, check_finite, progress, step_generator

PUBLISHED_CONFIGS = {"vq": LlamaGenVQConfig, "kl": MARKLConfig}


def import_published(kind: str, path: str | Path, out: str | Path, width: int = 128) -> dict:
    """Wrap a released checkpoint (LlamaGen VQ, MAR KL) as the pipeline's ``tokenizer.pt``.

    ``width`` is the layout's base channel count: 128 for the released files (``tokenizer.width``
    of the ImageNet presets); smaller widths build the same layout cheaply for stand-in runs.
    """
    model = load_published(kind, path, PUBLISHED_CONFIGS[kind](ch=width))
    save_checkpoint(out, {"kind": "tokenizer", "spec": model.spec_dict(), "published": kind,
                          "config": dataclasses.asdict(model.config), "source": str(path),
                          "source_sha256": file_sha256(path), "state_dict": model.state_dict()})
    return {"imported": model.layout_name, "from": str(path), "latent_scale": model.latent_scale}


def use_checkpoint(cfg: Config, kind: str, path: str | Path, out: str | Path) -> dict:
    """tokenizer.vq_checkpoint / kl_checkpoint: the pipeline's own ``tokenizer.pt`` is pinned
    (:func:`pin_tokenizer`); any other file is taken for a released checkpoint and imported."""
    try:
        ckpt = load_checkpoint(path, "tokenizer")
    except CheckpointError:
        return import_published(kind, path, out, cfg.tokenizer.width)  # or an error naming the file
    return pin_tokenizer(cfg, kind, path, ckpt, out)


def pin_tokenizer(cfg: Config, kind: str, path: str | Path, ckpt: dict, out: str | Path) -> dict:
    """Use a trained tokenizer as is: its codes define what every generator models and what its
    NLL counts, and a tokenizer retrained on another machine rounds differently. The file must
    be this preset's tokenizer (kind and settings, and its data set where it records one); it
    is copied byte for byte to ``out``."""
    name = f"tokenizer.{kind}_checkpoint {path}"
    if "published" in ckpt:
        raise ValueError(f"{name}: an imported released tokenizer; give the released file itself")
    want = dataclasses.asdict(TokenizerSpec.from_config(cfg.tokenizer, cfg.data.channels, kind))
    diff = {k: (ckpt["spec"].get(k), v) for k, v in want.items() if ckpt["spec"].get(k) != v}
    if diff:
        raise ValueError(f"{name} does not fit this preset's tokenizer settings: "
                         + ", ".join(f"{k} is {a} in the file, {b} here" for k, (a, b) in diff.items()))
    if ckpt.get("dataset") and ckpt["dataset"] != cfg.data.dataset:
        raise ValueError(f"{name}: trained on {ckpt['dataset']}, but the data set is {cfg.data.dataset}")
    return {"pinned": kind, **copy_pinned(path, out)}


def train_tokenizer(cfg: Config, kind: str, train_images: str | Path, out: str | Path) -> dict:
    """Train on the train split; resumable from ``<out>.state`` (removed when done)."""
    tc = cfg.tokenizer
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer kind '{kind}' (known: {', '.join(TOKENIZERS)})")
    images, _, _ = load_images(train_images)
    device = resolve_device(cfg.workflow.device)
    torch.manual_seed(tc.seed)
    model = build_tokenizer(TokenizerSpec.from_config(tc, images.shape[1], kind))
    if kind == "vq":
        model.init_codebook(to_float(images[:1024]), step_generator(tc.seed, -1))
    model.to(device)  # batches are drawn on the CPU: the same images on any device
    weight = tc.commitment if kind == "vq" else tc.kl_weight
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    state = Resumable(Path(out).with_suffix(".state.pt"), "tokenizer-state",
                      fingerprint(cfg, "data", "tokenizer") + kind)
    start = state.load({"model": model, "opt": opt})
    bar = progress(tc.steps, start, "tokenizer", "step")
    stats: dict = {}
    t0 = time.perf_counter()
    for step in range(start, tc.steps):
        gen = step_generator(tc.seed, step)
        idx = torch.randint(0, len(images), (tc.batch_size,), generator=gen).numpy()
        x = to_float(images[idx]).to(device)
        torch.manual_seed(tc.seed * 1_000_003 + step)  # the KL's sampling noise, per step
        _, loss, stats = model(x, weight)
        check_finite(loss, step, "tokenizer")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update()
        bar.set_postfix(mse=f"{stats['rec_mse']:.4f}", refresh=False)
        if (step + 1) % 200 == 0 and step + 1 < tc.steps:
            state.save(step + 1, {"model": model, "opt": opt})
    bar.close()
    if kind == "kl":
        model.calibrate(to_float(images[:2048]).to(device))
    save_checkpoint(out, {"kind": "tokenizer", "spec": model.spec_dict(), "dataset": cfg.data.dataset,
                          "state_dict": model.state_dict()})
    state.path.unlink(missing_ok=True)
    return {"steps": tc.steps, "seconds": time.perf_counter() - t0, "last_batch": stats}


def load_tokenizer(path: str | Path) -> torch.nn.Module:
    """A trained or imported tokenizer, in eval mode."""
    ckpt = load_checkpoint(path, "tokenizer")
    if "published" in ckpt:
        config = PUBLISHED_CONFIGS[ckpt["published"]](**ckpt["config"])
        model = build_published(ckpt["published"], config)
    else:
        model = build_tokenizer(TokenizerSpec(**ckpt["spec"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


@torch.no_grad()
def reconstruct(model: torch.nn.Module, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images -> (uint8 reconstructions, codes or scaled latent means), on the model's device."""
    device = next(model.parameters()).device
    recon, codes = [], []
    for sl in batches(len(images), batch_size):
        c = model.encode(to_float(images[sl]).to(device))
        codes.append(c.cpu().numpy())
        recon.append(to_uint8(model.decode(c)))
    return np.concatenate(recon), np.concatenate(codes)


def latent_meta(model: torch.nn.Module, tokenizer_path: str | Path, images: ImageSet, seed: int) -> dict:
    """Attributes of a latent store: what produced it and how to read it."""
    discrete = model.spec.kind == "vq"
    return {
        "tokenizer": model.spec.kind, "tokenizer_checkpoint": str(tokenizer_path),
        "tokenizer_sha256": file_sha256(tokenizer_path),
        "grid_size": images.attrs["image_size"] // model.spec.downsample,
        "vocab_size": model.spec.codebook_size if discrete else 0,
        "token_dim": 1 if discrete else model.spec.code_dim, "num_classes": images.attrs["num_classes"],
        "latent_scale": model.latent_scale, "dataset": images.attrs["dataset"],
        "split": images.attrs["split"], "images_sha256": file_sha256(images.path),
        "row_shuffle_seed": seed, "views": "image, horizontal flip",
    }


def _latent_layout(meta: dict) -> tuple[str, tuple, type]:
    """(dataset name, shape of one row, dtype) of a store's latents. VQ: codes; KL: the posterior
    moments (mean, log-variance), so training draws a new latent from them every time (as MAR's
    cache). Each row holds the image [0] and its horizontal flip [1]."""
    g = meta["grid_size"]
    if meta["tokenizer"] == "vq":
        return "codes", (2, g, g), np.int16
    return "moments", (2, 2 * meta["token_dim"], g, g), np.float32


@torch.no_grad()
def extract_latents(cfg: Config, tokenizer_path: str | Path, images_path: str | Path, out: str | Path,
                    shard: int = 0, shards: int = 1, device: torch.device | None = None) -> dict:
    """Encode one shard of a split, every image and its horizontal flip, into a part store.

    Rows are shuffled once (``latents.seed``) and cut into blocks of ``latents.batch_size``;
    shard k of K takes a contiguous range of blocks, so ``merge_latents`` only concatenates.
    Finished blocks are kept next to ``out`` until the part is written: a killed job resumes.
    Images are decoded by ``latents.workers`` loader processes and encoded on ``device``.
    """
    device = device or torch.device("cpu")
    model = load_tokenizer(tokenizer_path).to(device)
    images = ImageSet(images_path)
    n, bsz = len(images), cfg.latents.batch_size
    perm = np.random.default_rng(cfg.latents.seed).permutation(n)
    meta = latent_meta(model, tokenizer_path, images, cfg.latents.seed)
    name, row_shape, dtype = _latent_layout(meta)
    encode = model.encode if name == "codes" else model.moments

    def rows(b: int) -> np.ndarray:
        return perm[b * bsz:(b + 1) * bsz]

    blocks = shard_blocks(-(-n // bsz), shard, shards)
    cache = BlockCache(Path(f"{out}.blocks"), json.dumps({"latents": dataclasses.asdict(cfg.latents), **meta,
                                                         "shard": shard, "shards": shards}, sort_keys=True))
    todo = [b for b in blocks if not cache.done(b)]
    batches_ = iter(DataLoader(images, batch_sampler=[rows(b) for b in todo], collate_fn=batch_as_is,
                               num_workers=cfg.latents.workers))

    def encode_block(b: int) -> dict[str, np.ndarray]:
        x, y = next(batches_)
        x = to_float(x).to(device)
        views = torch.stack([encode(x), encode(x.flip(-1))], dim=1)
        return {name: views.cpu().numpy().astype(dtype), "labels": y}

    t0 = time.perf_counter()
    cache.compute(blocks, encode_block, lambda b: len(rows(b)), f"latents {shard + 1}/{shards}")
    seconds = time.perf_counter() - t0
    lo, hi = (blocks[0] * bsz, min(blocks[-1] * bsz + bsz, n)) if blocks else (0, 0)
    write_part(out, "latents", meta, shard, shards, (lo, hi),
               {name: (row_shape, dtype), "labels": ((), np.int64)},
               ((b * bsz, cache.load(b)) for b in blocks), cfg.latents.chunk_rows)
    cache.clear()
    encoded = sum(len(rows(b)) for b in todo)
    return {"images": hi - lo, "grid_size": meta["grid_size"], "seconds": seconds,
            "images_per_s": encoded / seconds if encoded else None, "device": str(device)}


def merge_latents(parts: list[str | Path], out: str | Path, chunk_rows: int) -> dict:
    """Concatenate the part stores of shards 0..K-1 into one latent store."""
    attrs, n = merge_parts(parts, out, "latents", ("tokenizer_sha256", "images_sha256", "row_shuffle_seed"),
                           chunk_rows)
    return {"images": n, "parts": len(parts), "grid_size": attrs["grid_size"]}
