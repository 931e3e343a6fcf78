"""Generator training: AdamW (0.9, 0.95), warm-up + schedule, grad clipping, EMA, exact resume.

State lives in ``<out_dir>/last.pt`` (written atomically every ``ckpt_every`` steps); a re-run
of a killed job continues from it with the same data order and randomness, because both are
functions of (seed, step) only. The final model goes to ``<out_dir>/model.pt``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import torch

from heptapod.config import Config, fingerprint
from heptapod.data.store import LatentStore
from heptapod.models.heptapod import Heptapod, ModelSpec
from heptapod.utils.device import autocast, resolve_device
from heptapod.utils.io import load_checkpoint, save_checkpoint
from heptapod.utils.training import (
    EMA, MetricsLog, Resumable, check_finite, lr_at, param_groups, progress, step_generator,
)


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
    view = codes[torch.arange(len(codes)), flip]
    if store.continuous:  # draw a latent from the posterior moments, scale, (B, N, C) raster order
        mean, logvar = view.chunk(2, dim=1)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=gen)
        tokens = (z * store.attrs["latent_scale"]).flatten(2).transpose(1, 2)
    else:
        tokens = view.flatten(1)  # (B, N) raster order
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


def train(cfg: Config, latents: str | Path, out_dir: str | Path, max_steps: int | None = None) -> dict:
    """Train (or resume) until ``train.steps``; ``max_steps`` stops early (for kill/resume tests)."""
    tc = cfg.train
    out_dir = Path(out_dir)
    store = LatentStore(latents)
    device = resolve_device(cfg.workflow.device)
    model = build_model(cfg, store).to(device)
    ema = EMA(model, tc.ema_decay)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.95))
    state = Resumable(out_dir / "last.pt", "train-state",
                      fingerprint(cfg, "model", "train") + store.attrs["tokenizer_sha256"])
    objects = {"model": model, "ema": ema, "opt": opt}
    start = state.load(objects)
    log = MetricsLog(out_dir / "log.jsonl", start)
    stop = min(tc.steps, max_steps if max_steps is not None else tc.steps)
    snapshots = set(snapshot_steps(tc))
    flops = step_flops(model, [x.to(device) for x in training_batch(store, cfg, model, 0)[:4]])
    bar = progress(tc.steps, start, "train")
    seqs_per_epoch = store.steps_per_epoch(tc.batch_size) * tc.batch_size
    model.train()
    t_start = t_last = time.perf_counter()
    seen = 0
    for step in range(start, stop):
        tokens, labels, order, prefix, gen = (
            x.to(device) if torch.is_tensor(x) else x for x in training_batch(store, cfg, model, step))
        lr = lr_at(step, tc.lr, tc.warmup_steps, tc.steps, tc.lr_schedule)
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast(device):
            loss, info = model.loss(tokens, labels, order, prefix, gen)
        check_finite(loss, step, "train")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        opt.step()
        ema.update(model)
        seen += len(tokens)
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if done % tc.log_every == 0 or done == tc.steps:
            now = time.perf_counter()
            log.write({"step": done, "epoch": done * tc.batch_size / seqs_per_epoch,
                       "loss": loss.item(), "lr": lr, "grad_norm": float(grad_norm),
                       "seqs_per_s": seen / (now - t_last), "supervised_slots": info["supervised_slots"],
                       "elapsed_s": log.elapsed0 + now - t_start})
            t_last, seen = now, 0
        if done in snapshots:  # written before the resumable state: a kill never loses one
            save_checkpoint(out_dir / "snapshots" / f"step-{done:07d}.pt",
                            _generator_checkpoint(model, ema, done, store, {}))
        if done % tc.ckpt_every == 0 or done == stop:
            state.save(done, objects)
    bar.close()
    if stop < tc.steps:
        return {"stopped_at": stop}
    extra = {"step_flops": flops, "train_flops": flops * tc.steps,
             "sequences_seen": tc.steps * tc.batch_size}
    save_checkpoint(out_dir / "model.pt", _generator_checkpoint(model, ema, tc.steps, store, extra))
    return {"steps": tc.steps, "num_params": model.num_params(), "train_pflops": flops * tc.steps / 1e15}


def load_generator(path: str | Path, use_ema: bool = True) -> Heptapod:
    ckpt = load_checkpoint(path, "generator")
    model = Heptapod(ModelSpec(**ckpt["spec"]))
    model.load_state_dict(ckpt["ema"] if use_ema else ckpt["state_dict"])
    return model.eval()
