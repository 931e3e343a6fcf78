"""Paper-scale throughput (``heptapod bench-scale``): the preset's model on synthetic latents.

A GPU machine has no ImageNet: the latents are random draws of the shapes the preset's published
tokenizer gives (MAR's kl16: a 16x16 grid of 16 channels; LlamaGen's VQ: 16x16 codes), which is
all that throughput depends on. Measured, in bf16 autocast on a GPU (full precision on a CPU):

- training: images/s, step time, MFU (the step's FLOPs as torch counts them, against
  ``train.peak_tflops``) and peak memory at each batch of a ladder, up to the largest that fits;
- sampling: images/s with the KV cache at ``positions_per_step`` k in ``--positions``;
- training with ``torch.compile`` against eager, at one batch.

Not a test: its numbers go to ``results/bench/<device>-<preset>.json``. The file is rewritten
after every measurement with ``"complete": false`` until the last, so a run cut short by a
time limit still leaves what it measured, marked as such.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from heptapod.bench import median_step_s
from heptapod.config import Config
from heptapod.data.store import LatentStore, write_arrays
from heptapod.models.heptapod import Heptapod
from heptapod.sample import balanced_labels
from heptapod.train import build_model, step_flops, training_batch
from heptapod.utils.device import autocast, machine, resolve_device, synced_time
from heptapod.utils.training import step_generator

IMAGENET_CLASSES = 1000


def synthetic_latents(cfg: Config, path: str | Path, rows: int, num_classes: int = IMAGENET_CLASSES,
                      seed: int = 0) -> Path:
    """A latent store of ``rows`` random rows shaped like the preset's tokenizer output."""
    rng = np.random.default_rng(seed)
    grid = cfg.data.image_size // cfg.tokenizer.downsample
    labels = rng.integers(0, num_classes, size=rows).astype(np.int64)
    attrs = {"grid_size": grid, "num_classes": num_classes, "tokenizer_sha256": "synthetic",
             "dataset": "synthetic"}
    if cfg.model.tokens == "continuous":
        c = cfg.tokenizer.code_dim
        mean = rng.standard_normal((rows, 2, c, grid, grid), dtype=np.float32)
        logvar = np.full_like(mean, -6.0)
        arrays = {"moments": np.concatenate([mean, logvar], axis=2), "labels": labels}
        attrs |= {"tokenizer": "kl", "vocab_size": 0, "token_dim": c, "latent_scale": 1.0}
    else:
        v = cfg.tokenizer.codebook_size
        arrays = {"codes": rng.integers(0, v, size=(rows, 2, grid, grid)).astype(np.int16), "labels": labels}
        attrs |= {"tokenizer": "vq", "vocab_size": v, "token_dim": 1}
    write_arrays(path, "latents", arrays, attrs, chunk_rows=min(rows, 1024))
    return Path(path)


def _train_step_fn(model: Heptapod, step: Callable, device: torch.device, clip: float) -> Callable:
    """One training step as the train stage takes it: loss in autocast, backward, clip, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def run(batch) -> None:
        with autocast(device):
            loss = step(*batch)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()

    return run


def _batches(cfg: Config, model: Heptapod, store: LatentStore, batch: int, count: int) -> list:
    device = next(model.parameters()).device
    bcfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch))
    return [[x.to(device) for x in training_batch(store, bcfg, model, s)[:4]] for s in range(count)]


def flops_per_image(cfg: Config, model: Heptapod, store: LatentStore, batch: int = 2) -> float:
    """Training FLOPs (forward + backward) per image, counted by torch at a small batch: the
    step's FLOPs grow linearly with the batch, and counting at the largest batch would need a
    second copy of the model's activations."""
    device = next(model.parameters()).device
    with autocast(device):
        return step_flops(model, _batches(cfg, model, store, batch, 1)[0]) / batch


def time_training(cfg: Config, model: Heptapod, store: LatentStore, batch: int, steps: int,
                  image_flops: float, compiled: bool = False) -> dict:
    """Median step time of ``steps`` steps (after 2 warm-up steps) at ``batch``; its images/s,
    TFLOP/s, MFU and peak memory. A batch that does not fit raises torch.OutOfMemoryError."""
    device = next(model.parameters()).device
    batches = _batches(cfg, model, store, batch, steps + 2)
    step = torch.compile(model) if compiled else model
    run = _train_step_fn(model, step, device, cfg.train.grad_clip)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = median_step_s(run, batches, steps, device)
    flops = image_flops * batch
    row = {"batch": batch, "step_s": t, "images_per_s": batch / t, "step_tflop": flops / 1e12,
           "tflops_per_s": flops / t / 1e12, "compiled": compiled}
    if cfg.train.peak_tflops > 0:
        row["mfu"] = row["tflops_per_s"] / cfg.train.peak_tflops
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def batch_ladder(cfg: Config, model: Heptapod, store: LatentStore, batches: list[int], steps: int,
                 image_flops: float) -> dict:
    """Training throughput at each batch until one does not fit; the largest that fits."""
    device = next(model.parameters()).device
    rows, oom = [], None
    for b in batches:
        try:
            rows.append(time_training(cfg, model, store, b, steps, image_flops))
        except torch.OutOfMemoryError:
            oom = b
            break
        finally:
            model.zero_grad(set_to_none=True)
            _free(device)
    return {"rows": rows, "largest_fitting_batch": rows[-1]["batch"] if rows else None,
            "first_batch_out_of_memory": oom}


def sampling_seconds(model: Heptapod, labels: torch.Tensor, k: int, seed: int = 1) -> float:
    """Seconds of one KV-cached sampling pass for ``labels`` at ``k`` positions per step, as the
    sample stage draws (bf16 autocast on a GPU)."""
    device = labels.device
    t0 = synced_time(device)
    with torch.no_grad(), autocast(device):
        model.sample(labels, generator=step_generator(0, seed), positions_per_step=k)
    return synced_time(device) - t0


def time_sampling(model: Heptapod, batch: int, num_classes: int, k: int) -> dict:
    """images/s of the KV-cached sampler at ``k`` positions per step (after a small warm-up)."""
    device = next(model.parameters()).device
    labels = balanced_labels(batch, num_classes).to(device)
    sampling_seconds(model, labels[:2], k, seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = sampling_seconds(model, labels, k)
    row = {"batch": batch, "positions_per_step": k, "steps": -(-model.spec.num_positions // k),
           "seconds": t, "images_per_s": batch / t}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def run_scale_bench(cfg: Config, latents: str | Path, batches: list[int], positions: list[int],
                    sample_batch: int, steps: int, compile_batch: int | None,
                    write: Callable[[dict], None]) -> dict:
    """Every measurement, each written (``write``) as soon as it is taken."""
    device = resolve_device(cfg.workflow.device)
    store = LatentStore(latents)
    model = build_model(cfg, store).to(device)
    out = {"machine": machine(device), "complete": False,
           "model": {"params": model.num_params(), "width": cfg.model.width, "tokens": cfg.model.tokens,
                     "depth": f"{cfg.model.backbone_depth}/{cfg.model.head_depth}", "head": cfg.model.head,
                     "grid": store.grid_size, "token_dim": store.token_dim,
                     "supervision_density": cfg.train.supervision_density,
                     "diffloss": (f"{cfg.model.diffloss_depth} x {cfg.model.diffloss_width}, "
                                  f"{cfg.model.diffloss_sample_steps} sampling steps")
                     if cfg.model.tokens == "continuous" else None},
           "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
           "peak_tflops": cfg.train.peak_tflops or None, "latents": "synthetic (random, tokenizer shapes)"}
    image_flops = flops_per_image(cfg, model, store)
    out["train_tflop_per_image"] = image_flops / 1e12
    write(out)
    out["train"] = batch_ladder(cfg, model, store, batches, steps, image_flops)
    write(out)
    model.eval()
    out["sample"] = []
    for k in positions:
        out["sample"].append(time_sampling(model, sample_batch, store.num_classes, k))
        _free(device)
        write(out)
    model.train()
    if compile_batch:
        eager = next((r for r in out["train"]["rows"] if r["batch"] == compile_batch), None)
        compiled = time_training(cfg, model, store, compile_batch, steps, image_flops, compiled=True)
        out["compile"] = {"batch": compile_batch, "eager_images_per_s": eager and eager["images_per_s"],
                          "compiled_images_per_s": compiled["images_per_s"],
                          "speedup": eager and compiled["images_per_s"] / eager["images_per_s"]}
    out["complete"] = True
    write(out)
    return out
