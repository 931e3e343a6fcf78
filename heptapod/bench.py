"""Throughput benchmark (``heptapod bench``): not a test, its numbers go to results/bench/*.json.

Measures, on the machine it runs on, with the preset's model and batch size:
- training: backbone-only step (next-token linear output) vs backbone + global head at n = 1;
- sampling: images/s with and without the backbone KV cache, and the share of sampling time in
  the backbone vs the head (with the cache, the head should dominate);
- parallel decoding: images/s and backbone share of the global head at k positions per step
  (``evaluate.speed_positions``);
- the 1D baseline's KV cache at the paper's 16x16 grid: cached vs uncached images/s;
- data: latent-store batches/s vs training steps/s;
- training layouts on the CPU: one job on every thread vs one single-thread job per thread
  (how the workflow places parallel jobs), and torch.compile on one thread.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from typing import Callable

import torch
import torch.nn.functional as F

from heptapod.config import Config
from heptapod.data.store import LatentStore
from heptapod.models.heptapod import Heptapod, ModelSpec
from heptapod.sample import balanced_labels
from heptapod.train import build_model, training_batch
from heptapod.utils.device import autocast, machine, resolve_device, synced_time
from heptapod.utils.training import step_generator


def backbone_only_loss(model: Heptapod, tokens, labels, order, prefix) -> torch.Tensor:
    """The backbone with a per-step linear next-token output (discrete tokens) or no output at
    all (continuous tokens): the cost floor of any head."""
    idx = torch.arange(len(tokens), device=tokens.device)[:, None]
    seq = tokens[idx, order]
    h = model.backbone(model.backbone_inputs(seq[:, :-1], order, labels))
    if model.spec.tokens == "continuous":
        return h.float().square().mean()
    return F.cross_entropy(model.out.logits(h).flatten(0, 1), seq.flatten())



def median_step_s(run_step: Callable, batches_, steps: int, device: torch.device) -> float:
    """Median wall time of ``run_step(batch)`` over ``steps`` batches after 2 warm-up steps."""
    times = []
    for i, batch in enumerate(batches_[: steps + 2]):
        t0 = synced_time(device)
        run_step(batch)
        if i >= 2:  # the first steps pay allocation, autotuning and compilation
            times.append(synced_time(device) - t0)
    return sorted(times)[len(times) // 2]  # median


def _time_train(model: Heptapod, loss_fn, batches_, steps: int) -> float:
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run_step(batch) -> None:
        with autocast(device):
            loss = loss_fn(*batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return median_step_s(run_step, batches_, steps, device)


def _time_sample(model: Heptapod, labels: torch.Tensor, **kw) -> tuple[float, dict]:
    device = next(model.parameters()).device
    timer: dict = {}
    t0 = synced_time(device)
    with autocast(device):
        model.sample(labels.to(device), generator=step_generator(0, 0), timer=timer, **kw)
    return synced_time(device) - t0, timer


def parallel_decoding(model: Heptapod, labels: torch.Tensor, ks: list[int]) -> dict:
    """images/s and backbone share at each k; target: k = 4 >= 3x the images/s of k = 1."""
    rows = {}
    for k in ks:
        t, timer = _time_sample(model, labels, positions_per_step=k)
        rows[f"k={k}"] = {"images_per_s": len(labels) / t,
                          "backbone_share": timer["backbone"] / (timer["backbone"] + timer["head"])}
    base = rows["k=1"]["images_per_s"] if "k=1" in rows else None
    for r in rows.values():
        r["speedup_vs_k1"] = r["images_per_s"] / base if base else None
    return {"batch": len(labels), **rows, "target_k4_speedup_min": 3.0}


def one_d_cache_at_16x16(spec: ModelSpec, labels: torch.Tensor, device: torch.device) -> dict:
    """The 1D baseline at the paper's 16x16 grid (random weights, discrete tokens: only the
    backbone's KV cache is measured): cached vs recomputed sampling; target: the cache >= 8x faster."""
    torch.manual_seed(0)
    one_d = dataclasses.replace(spec, grid_size=16, head="1d", order="raster", tokens="discrete",
                                token_dim=1, vocab_size=max(spec.vocab_size, 16))
    model = Heptapod(one_d).to(device).eval()
    _time_sample(model, labels[:2])  # warm-up
    t_cached, _ = _time_sample(model, labels, use_cache=True)
    t_uncached, _ = _time_sample(model, labels, use_cache=False)
    return {"grid": 16, "batch": len(labels), "images_per_s_kv_cache": len(labels) / t_cached,
            "images_per_s_no_cache": len(labels) / t_uncached, "kv_cache_speedup": t_uncached / t_cached,
            "target_speedup_min": 8.0}


def _layout_steps_per_s(cfg: Config, latents_path: str, threads: int, compiled: bool) -> float:
    """Training steps/s of the preset's model (loss at its density, backward, AdamW) on
    ``threads`` threads, eager or torch.compile'd; run in a fresh process per layout."""
    torch.set_num_threads(threads)
    store = LatentStore(latents_path)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, store)
    step = torch.compile(model) if compiled else model
    batches_ = [training_batch(store, cfg, model, s)[:4] for s in range(cfg.bench.steps + 2)]
    step(*batches_[0])  # compiles (or warms up) outside the timed steps
    return 1 / _time_train(model, lambda *b: step(*b)[0], batches_, cfg.bench.steps)


def training_layouts(cfg: Config, latents_path: str, threads: int) -> dict:
    """Aggregate training steps/s of the CPU layouts the workflow could use: one job on all
    ``threads`` threads, ``threads`` concurrent single-thread jobs (measured side by side, so they
    share memory bandwidth as parallel jobs do), and torch.compile on one thread."""
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no thread pool carried over
    with ctx.Pool(threads) as pool:
        one_job = pool.apply(_layout_steps_per_s, (cfg, latents_path, threads, False))
        side_by_side = pool.starmap(_layout_steps_per_s, [(cfg, latents_path, 1, False)] * threads)
        compiled = pool.apply(_layout_steps_per_s, (cfg, latents_path, 1, True))
    rows = {f"1 job x {threads} threads": one_job,
            f"{threads} jobs x 1 thread": sum(side_by_side),
            "1 job x 1 thread": side_by_side[0],
            "1 job x 1 thread, torch.compile": compiled}
    return {"steps_per_s": rows,
            "jobs_vs_threads_speedup": rows[f"{threads} jobs x 1 thread"] / one_job,
            "compile_speedup_1_thread": compiled / side_by_side[0]}


def run_bench(cfg: Config, latents_path: str) -> dict:
    """Every measurement, on the device the preset names (``workflow.device``)."""
    device = resolve_device(cfg.workflow.device)
    store = LatentStore(latents_path)
    model = build_model(cfg, store).to(device)
    steps, bsz = cfg.bench.steps, cfg.train.batch_size
    batches_ = [training_batch(store, cfg, model, s) for s in range(steps + 2)]
    n1 = [tuple(x.to(device) for x in (t, y, o, p[:, :1])) for t, y, o, p, _ in batches_]
    t_backbone = _time_train(model, lambda *b: backbone_only_loss(model, *b), n1, steps)
    t_full = _time_train(model, lambda *b: model.loss(*b)[0], n1, steps)
    tokens_per_step = bsz * store.grid_size ** 2

    model.eval()
    labels = balanced_labels(cfg.bench.sample_batch, store.num_classes)
    _time_sample(model, labels[:2])  # warm-up: first calls pay allocations
    t_cached, timer = _time_sample(model, labels, use_cache=True)
    t_uncached, _ = _time_sample(model, labels, use_cache=False)

    parallel = parallel_decoding(model, labels, cfg.evaluate.speed_positions) if cfg.model.head == "global" else None
    one_d = one_d_cache_at_16x16(model.spec, labels, device)

    # thread layouts are a CPU question; a GPU job's throughput is the GPU's
    cpu_layouts = cfg.bench.layouts and device.type == "cpu"
    layouts = training_layouts(cfg, latents_path, torch.get_num_threads()) if cpu_layouts else None

    reader = LatentStore(latents_path)  # fresh: no block cached yet
    n_loader = 20 * (steps + 2)
    t0 = time.perf_counter()
    for s in range(n_loader):
        reader.batch(s, bsz, cfg.train.seed)
    loader_bps = n_loader / (time.perf_counter() - t0)

    return {
        "machine": machine(device),
        "tokens": cfg.model.tokens,
        "model": {"params": model.num_params(), "width": cfg.model.width,
                  "depth": f"{cfg.model.backbone_depth}/{cfg.model.head_depth}",
                  "grid": store.grid_size, "batch_size": bsz},
        "train": {
            "backbone_only_step_s": t_backbone, "backbone_plus_head_step_s": t_full,
            "backbone_only_tokens_per_s": tokens_per_step / t_backbone,
            "backbone_plus_head_tokens_per_s": tokens_per_step / t_full,
            "head_step_ratio": t_full / t_backbone, "target_head_step_ratio_max": 2.2,
        },
        "sample": {
            "batch": len(labels), "images_per_s_kv_cache": len(labels) / t_cached,
            "images_per_s_no_cache": len(labels) / t_uncached,
            "kv_cache_speedup": t_uncached / t_cached,
            "backbone_share_kv_cache": timer["backbone"] / (timer["backbone"] + timer["head"]),
            "target_backbone_share_max": 0.15,
        },
        "parallel_decoding": parallel,
        "one_d_cache_16x16": one_d,
        "train_layouts": layouts,
        "loader": {
            "batches_per_s": loader_bps, "train_steps_per_s": 1 / t_full,
            "loader_to_train_ratio": loader_bps * t_full, "target_ratio_min": 20,
        },
    }
