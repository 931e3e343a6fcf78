"""Held-out likelihood: the score that compares heads without sampling noise.

Every discrete variant (1D raster/random, 2D global/local) is an exact autoregressive model
under its own generation order, so its test negative log-likelihood in bits per token is
comparable across heads. A random-order model's NLL depends on the order: it is averaged
over ``orders`` orders per image, and the spread over orders is reported beside it (how much
the order matters is itself a finding). Orders come from a fixed seed, so every random-order
model is scored on the same orders. Every run is scored on the same images, so the per-image
scores it writes let a report compare two runs image by image (a paired comparison: how hard an
image is cancels out of the difference). Continuous (KL + DiffLoss) runs have
no likelihood here: they get their validation noise-prediction loss, in its own column.

A discrete run's NLL is also split by generation step: step t scores the token at ``order[t]``
given the class and the t tokens before it, so early steps predict with little context and late
steps fill in a nearly finished grid. The score written is the mean of that curve; kept beside it
(the curve, and each image's mean over each quarter of the steps), it lets a report say where in
the generation two runs' NLL gap sits from the scores alone, without the checkpoints.

The held-out set is the first ``images`` rows of the test latent store, unflipped (the store's
rows were shuffled with a fixed seed when it was written, so this is a fixed random subset).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from heptapod.data.store import LatentStore
from heptapod.models.heptapod import Heptapod

DISCRETE_KEY = "nll_bits_per_token"
CONTINUOUS_KEY = "val_diffusion_loss"
BY_STEP_KEY = "nll_bits_by_step"  # the mean over images of each step's NLL: the curve
QUARTERS_KEY = "nll_bits_by_step_quarter_per_image"  # each image's mean over each quarter of the steps


def order_generator(seed: int, k: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 7919 + k)


def heldout_shape(model: Heptapod, store: LatentStore, images: int | None, orders: int) -> tuple[int, int]:
    """(M, K): the held-out rows scored (the first ``images``, or all) and the orders per row
    (raster-order models: their one order)."""
    m = store.num_rows if images is None else min(images, store.num_rows)
    if m < 1:
        raise ValueError(f"{store.path}: no held-out rows to score")
    return m, 1 if model.spec.order == "raster" else orders


def scored_batches(model: Heptapod, store: LatentStore, images: int | None, orders: int, batch_size: int,
                   seed: int = 0) -> Iterator[tuple[int, int, int, tuple, torch.Generator]]:
    """What every held-out score reads, batch by batch: (k, lo, hi, (tokens, labels, order),
    noise) for the first ``images`` rows under order k (raster-order models: one order), on the
    model's device, with the model in eval mode meanwhile. Orders (and the continuous loss's
    noise) follow ``seed``, so every model is scored on the same orders."""
    device = next(model.parameters()).device
    m, k_orders = heldout_shape(model, store, images, orders)
    was_training = model.training
    model.eval()
    try:
        for k in range(k_orders):
            order_all = model.orders(m, order_generator(seed, k))  # same orders for every model
            noise = order_generator(seed + 1, k)
            for lo in range(0, m, batch_size):
                hi = min(lo + batch_size, m)
                codes, labels = store.rows(lo, hi)
                tokens = store.tokens(codes[:, 0]).to(device)
                yield k, lo, hi, (tokens, labels.to(device), order_all[lo:hi].to(device)), noise
    finally:
        model.train(was_training)


@torch.no_grad()
def heldout_scores(model: Heptapod, store: LatentStore, images: int | None, orders: int,
                   batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Per image and order (M, K): NLL in bits/token (discrete) or the noise-prediction loss
    (continuous); raster-order models have a single order, so K = 1 for them. And, discrete only
    (else None), each image's NLL in bits at each generation step, mean over its orders (M, N):
    each row's mean is that image's score, from the same head outputs."""
    m, k_orders = heldout_shape(model, store, images, orders)
    scores = np.empty((m, k_orders))
    discrete = model.spec.tokens == "discrete"
    per_step = np.zeros((m, model.spec.num_positions)) if discrete else None
    for k, lo, hi, args, noise in scored_batches(model, store, images, orders, batch_size, seed):
        if discrete:
            nll = model.nll(*args)  # (B, N) nats, column t: generation step t + 1
            scores[lo:hi, k] = (nll.sum(1) / (model.spec.num_positions * math.log(2))).cpu().numpy()
            per_step[lo:hi] += (nll / math.log(2)).cpu().numpy() / k_orders
        else:
            scores[lo:hi, k] = model.diffusion_loss(*args, generator=noise).double().cpu().numpy()
    return scores, per_step


def quarter_means(per_step: np.ndarray) -> np.ndarray:
    """Mean NLL over each quarter of the steps (the last axis; first quarter: the least context),
    for one curve (4,) or per image (M, 4)."""
    return np.stack([part.mean(axis=-1) for part in np.array_split(np.asarray(per_step), 4, axis=-1)], axis=-1)


def summarize(scores: np.ndarray, continuous: bool, per_step: np.ndarray | None = None) -> dict:
    """Mean over images (of each image's mean over orders), its standard error over images, the
    spread over orders (root mean of each image's variance over orders; null for one order), and
    each image's mean over orders (for paired comparisons between runs). With ``per_step`` (M, N):
    the NLL by generation step, as a curve and per image by quarter of the steps."""
    key = CONTINUOUS_KEY if continuous else DISCRETE_KEY
    per_image = scores.mean(axis=1)
    m, k = scores.shape
    by_step = {} if per_step is None else {
        BY_STEP_KEY: [float(x) for x in per_step.mean(axis=0)],
        QUARTERS_KEY: [[round(float(x), 6) for x in row] for row in quarter_means(per_step)]}
    return {
        key: float(per_image.mean()),
        f"{key}_se": float(per_image.std(ddof=1) / math.sqrt(m)) if m > 1 else None,
        f"{key}_order_sd": float(np.sqrt(scores.var(axis=1, ddof=1).mean())) if k > 1 else None,
        f"{key}_by_order": [float(x) for x in scores.mean(axis=0)],
        f"{key}_per_image": [round(float(x), 6) for x in per_image],
        **by_step, "heldout_images": m, "heldout_orders": k,
    }


def heldout_likelihood(model: Heptapod, latents: str | Path, images: int | None, orders: int,
                       batch_size: int, seed: int = 0) -> dict:
    """Summary of :func:`heldout_scores` on a test latent store, with what was scored."""
    store = LatentStore(latents)
    try:
        if store.continuous != (model.spec.tokens == "continuous"):
            raise ValueError(f"{latents}: latents of tokenizer '{store.attrs.get('tokenizer')}' do not "
                             f"fit a model with {model.spec.tokens} tokens")
        scores, per_step = heldout_scores(model, store, images, orders, batch_size, seed)
    finally:
        store.close()
    return {**summarize(scores, model.spec.tokens == "continuous", per_step),
            "kind": "diffusion loss (not a likelihood)" if model.spec.tokens == "continuous"
            else "negative log-likelihood, bits per token"}
