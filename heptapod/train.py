"""Generator training: AdamW (0.9, 0.95), warm-up + schedule, grad clipping, EMA, exact resume,
one process or DDP under torchrun, gradient accumulation, bf16 on GPU.

State lives in ``<out_dir>/last.pt`` (written atomically every ``ckpt_every`` steps); a re-run
of a killed job continues from it with the same data order and randomness, because both are
functions of (seed, step) only. The final model goes to ``<out_dir>/model.pt``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from heptapod import paths
from heptapod.config import Config, training_fingerprint
from heptapod.data.store import LatentStore
from heptapod.models.heptapod import Heptapod, ModelSpec
from heptapod.parking import seed_from_parked
from heptapod.utils.device import autocast, machine, machine_label, resolve_device
from heptapod.utils.io import load_checkpoint, save_checkpoint
from heptapod.utils.training import (
    EMA, MetricsLog, Resumable, StaleCheckpoint, check_finite, lr_at, param_groups, progress, step_generator,
)

logger = logging.getLogger(__name__)


def build_model(cfg: Config, store: LatentStore) -> Heptapod:
    if store.continuous != (cfg.model.tokens == "continuous"):
        raise ValueError(f"{store.path}: latents of tokenizer '{store.attrs.get('tokenizer')}' do not fit "
                         f"model.tokens '{cfg.model.tokens}'")
    spec = ModelSpec.from_config(cfg.model, store.vocab_size, store.grid_size, store.num_classes,
                                 store.token_dim)
    torch.manual_seed(cfg.train.seed)
    return Heptapod(spec)


def training_batch(store: LatentStore, cfg: Config, model: Heptapod, step: int):
    """Tokens (B, N), labels, orders and prefix lengths of one step, from (seed, step) alone."""
    tc = cfg.train
    codes, labels = store.batch(step, tc.batch_size, tc.seed)  # (B, 2, G, G) or (B, 2, 2C, G, G)
    gen = step_generator(tc.seed, step)
    flip = (torch.rand(len(codes), generator=gen) < tc.flip_prob).long()
    # continuous tokens: a fresh draw from the posterior moments at every step
    tokens = store.tokens(codes[torch.arange(len(codes)), flip], gen)
    n_pos = tokens.shape[1]
    if not 1 <= tc.supervision_density <= n_pos:
        raise ValueError(f"train.supervision_density must be in [1, {n_pos}], got {tc.supervision_density}")
    order = model.orders(len(codes), gen)
    prefix = torch.rand(len(codes), n_pos, generator=gen).argsort(1)[:, :tc.supervision_density]
    return tokens, labels, order, prefix, gen


def step_flops(model: Heptapod, batch) -> int:
    """FLOPs of one training step (forward + backward), counted by torch on a copy of the model."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        probe.loss(*batch)[0].backward()
    return counter.get_total_flops()


def snapshot_steps(tc) -> list[int]:
    return [round(tc.steps * (k + 1) / (tc.snapshots + 1)) for k in range(tc.snapshots)]


def _generator_checkpoint(model: Heptapod, ema: EMA, step: int, store: LatentStore, extra: dict) -> dict:
    return {"kind": "generator", "spec": dataclasses.asdict(model.spec), "steps": step,
            "state_dict": model.state_dict(), "ema": ema.state_dict(),
            "num_params": model.num_params(), "tokenizer_sha256": store.attrs["tokenizer_sha256"], **extra}


def accumulate_gradients(model: torch.nn.Module, batch, generator: torch.Generator, rank: int,
                         world: int, micro_batches: int, device: torch.device) -> float:
    """Backward the global batch's token-mean loss; returns this process's share of the loss.

    The global batch is cut into ``world * micro_batches`` equal parts; this process takes its
    ``micro_batches`` parts. Each part's summed loss is divided by the slot count of the whole
    batch (known from orders and prefixes), times ``world`` because DDP averages gradients over
    processes: any split gives the single-process gradient.
    """
    core = model.module if hasattr(model, "module") else model
    tokens, labels, order, prefix = batch
    count = core.supervised_count(order, prefix)
    parts = world * micro_batches
    if len(tokens) % parts:
        raise ValueError(f"train.batch_size {len(tokens)} is not divisible by processes x "
                         f"grad_accum = {parts}")
    size = len(tokens) // parts
    share = 0.0
    for i in range(micro_batches):
        sl = slice((rank * micro_batches + i) * size, (rank * micro_batches + i + 1) * size)
        last = i == micro_batches - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device):
                loss_sum, _ = model(tokens[sl].to(device), labels[sl].to(device), order[sl].to(device),
                                    prefix[sl].to(device), generator, reduction="sum")
            (loss_sum * (world / count)).backward()
        share += loss_sum.item() / count
    return share


def _distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world, device); under torchrun, joins the process group (NCCL on GPU, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def validation_record(model: Heptapod, ema: EMA, val_latents: str | Path, cfg: Config) -> dict:
    """Held-out score of the EMA weights (what sampling uses) on ``train.val_images`` images,
    one fixed order each: a validation curve that shows overfitting and when training stops moving."""
    from heptapod.evaluation.likelihood import CONTINUOUS_KEY, heldout_likelihood

    probe = copy.deepcopy(model)
    probe.load_state_dict(ema.state_dict())
    res = heldout_likelihood(probe, val_latents, cfg.train.val_images, 1, cfg.evaluate.nll_batch_size)
    if CONTINUOUS_KEY in res:
        return {"val_diffusion_loss": res[CONTINUOUS_KEY], "val_images": res["heldout_images"]}
    return {"val_nll_bits": res["nll_bits_per_token"], "val_images": res["heldout_images"]}


def train(cfg: Config, latents: str | Path, out_dir: str | Path, max_steps: int | None = None,
          val_latents: str | Path | None = None, restart_stale: bool = False,
          parked: str | Path | None = None) -> dict:
    """Train (or resume) until ``train.steps``; ``max_steps`` stops early (for kill/resume tests).

    Runs as one process or under ``torchrun`` (DDP); rank 0 writes logs and checkpoints. With
    ``val_latents`` (the test split's store), the EMA weights are scored on held-out images at
    every snapshot and at the end (``train.val_images``). A state left by other parameters is an
    error, or with ``restart_stale`` (the workflow reruns a run whose parameters changed) removed
    with its snapshots, and training starts over. A ``parked`` state (``heptapod.parking``: one
    kept in the repository by an earlier session) is resumed from where it is further on than
    ``out_dir``'s own and was trained with the same parameters.
    """
    tc = cfg.train
    out_dir = Path(out_dir)
    store = LatentStore(latents)
    rank, world, device = _distributed(cfg.workflow.device)
    model = build_model(cfg, store).to(device)
    ema = EMA(model, tc.ema_decay)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.95))
    state = Resumable(out_dir / paths.STATE_FILE, paths.STATE_KIND,
                      training_fingerprint(cfg, store.attrs["tokenizer_sha256"]))
    objects = {"model": model, "ema": ema, "opt": opt}
    if parked is not None and rank == 0:
        if (step := seed_from_parked(parked, out_dir, state.fingerprint)) is not None:
            logger.info("resuming from the parked state %s (step %d)", parked, step)
    if world > 1:
        dist.barrier()  # every rank loads the state rank 0 may have seeded
    try:
        start = state.load(objects)  # raises before touching the objects when the state is stale
    except StaleCheckpoint:
        if not restart_stale:
            raise
        if rank == 0:
            logger.warning("%s was written with other parameters: starting over", state.path)
            state.path.unlink()
            shutil.rmtree(out_dir / "snapshots", ignore_errors=True)
        if world > 1:
            dist.barrier()
        start = 0
    wrapped = model
    if world > 1:
        wrapped = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        wrapped = torch.compile(wrapped)
    main = rank == 0
    log = MetricsLog(out_dir / "log.jsonl", start) if main else None
    stop = min(tc.steps, max_steps if max_steps is not None else tc.steps)
    snapshots = set(snapshot_steps(tc))
    flops = step_flops(model, [x.to(device) for x in training_batch(store, cfg, model, 0)[:4]])
    bar = progress(tc.steps, start, "train", "step") if main else None
    seqs_per_epoch = store.steps_per_epoch(tc.batch_size) * tc.batch_size
    model.train()
    t_start = t_last = time.perf_counter()
    steps_since = 0
    for step in range(start, stop):
        tokens, labels, order, prefix, gen = training_batch(store, cfg, model, step)
        lr = lr_at(step, tc.lr, tc.warmup_steps, tc.steps, tc.lr_schedule)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        share = accumulate_gradients(wrapped, (tokens, labels, order, prefix), gen, rank, world,
                                     tc.grad_accum, device)
        loss = torch.tensor(share, device=device)
        if world > 1:
            dist.all_reduce(loss)
        check_finite(loss, step, "train")
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        opt.step()
        ema.update(model)
        steps_since += 1
        done = step + 1
        if main:
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if done % tc.log_every == 0 or done == tc.steps:
                now = time.perf_counter()
                steps_per_s = steps_since / (now - t_last)
                record = {"step": done, "epoch": done * tc.batch_size / seqs_per_epoch,
                          "loss": loss.item(), "lr": lr, "grad_norm": float(grad_norm),
                          "seqs_per_s": steps_per_s * tc.batch_size,
                          "tflops_per_s": steps_per_s * flops / 1e12,
                          "elapsed_s": log.elapsed0 + now - t_start}
                if tc.peak_tflops > 0:
                    record["mfu"] = record["tflops_per_s"] / (tc.peak_tflops * world)
                log.write(record)
                t_last, steps_since = now, 0
            if done in snapshots:  # written before the resumable state: a kill never loses one
                save_checkpoint(out_dir / "snapshots" / f"step-{done:07d}.pt",
                                _generator_checkpoint(model, ema, done, store, {}))
            if val_latents is not None and tc.val_images > 0 and (done in snapshots or done == tc.steps):
                t_val = time.perf_counter()
                val = validation_record(model, ema, val_latents, cfg)
                log.write({"step": done, **val, "elapsed_s": log.elapsed0 + t_val - t_start})
                bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{next(iter(val.values())):.3f}", refresh=False)
                t_last += time.perf_counter() - t_val  # throughput counts training time only
            if done % tc.ckpt_every == 0 or done == stop:
                state.save(done, objects)
    if main:
        bar.close()
    if world > 1:
        dist.barrier()
    if stop < tc.steps:
        return {"stopped_at": stop}
    extra = {"step_flops": flops, "train_flops": flops * tc.steps,
             "sequences_seen": tc.steps * tc.batch_size,
             # where the run finished training (a resumed run may have started elsewhere)
             "machine": machine_label(machine(device)) + (f" x {world} processes" if world > 1 else "")}
    if main:
        save_checkpoint(out_dir / paths.MODEL_FILE, _generator_checkpoint(model, ema, tc.steps, store, extra))
        log.publish()
    return {"steps": tc.steps, "num_params": model.num_params(), "train_pflops": flops * tc.steps / 1e15}


def load_generator(path: str | Path, use_ema: bool = True) -> Heptapod:
    ckpt = load_checkpoint(path, "generator")
    model = Heptapod(ModelSpec(**ckpt["spec"]))
    model.load_state_dict(ckpt["ema"] if use_ema else ckpt["state_dict"])
    return model.eval()
