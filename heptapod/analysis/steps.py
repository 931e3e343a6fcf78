"""Held-out NLL by generation step: where in the generation a model's likelihood is won or lost.

Step t scores the token at ``order[t]`` given the class and the t tokens before it, so early
steps predict with little context and late steps fill in a nearly finished grid. A run's
held-out NLL is the mean of this curve; two runs with the same overall NLL gap can differ
wholly in where it sits. Images and orders are the likelihood stage's (the first rows of the
test store, orders from the same seed), so over the same images the curve's mean is that stage's
number.
"""

from __future__ import annotations

import math
from contextlib import closing
from pathlib import Path

import numpy as np
import torch

from heptapod.data.store import LatentStore
from heptapod.evaluation.likelihood import heldout_shape, scored_batches
from heptapod.models.heptapod import Heptapod


@torch.no_grad()
def nll_by_step(model: Heptapod, latents: str | Path, images: int | None, orders: int,
                batch_size: int, seed: int = 0) -> np.ndarray:
    """(M, N): each held-out image's NLL in bits at each generation step, mean over orders
    (raster-order models: their one order)."""
    if model.spec.tokens != "discrete":
        raise ValueError("nll_by_step: continuous tokens have no discrete likelihood")
    with closing(LatentStore(latents)) as store:
        m, _ = heldout_shape(model, store, images, orders)
        total, counts = np.zeros((m, model.spec.num_positions)), np.zeros(m)
        for _k, lo, hi, args, _noise in scored_batches(model, store, images, orders, batch_size, seed):
            total[lo:hi] += (model.nll(*args) / math.log(2)).cpu().numpy()
            counts[lo:hi] += 1
    return total / counts[:, None]


def quarter_means(per_step: np.ndarray) -> np.ndarray:
    """Mean NLL over each quarter of the steps (the last axis; first quarter: the least context),
    for one curve (4,) or per image (M, 4)."""
    return np.stack([part.mean(axis=-1) for part in np.array_split(np.asarray(per_step), 4, axis=-1)], axis=-1)
