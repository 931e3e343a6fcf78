"""Token similarity maps (the paper's Fig. 3): the cosine similarity between the backbone state
of one query position and the state of every other position of the same image.

The state of a position is the one that consumed its token, taken after the backbone's last
layer (layer ``backbone_depth``, the same depth in every model; label-free, see ``trace``). A
representation that is more global makes distant positions more alike; the mean similarity at
each grid distance, over held-out images and every query position, says how much.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from heptapod.analysis.trace import grid_distances, heldout_batches, trace
from heptapod.models.heptapod import Heptapod


def states_by_position(model: Heptapod, tokens: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """(B, N, D): the backbone's last-layer state of each grid position (raster order)."""
    tr = trace(model, tokens, order, attention=False)
    states = tr.states[tr.backbone_depth - 1][:, 1:]  # step t consumed position order[t - 1]
    rank = order.argsort(dim=1)
    return states.gather(1, rank[..., None].expand(-1, -1, states.shape[-1]))


def cosine_maps(states: torch.Tensor) -> torch.Tensor:
    """(B, N, N): cosine similarity between every pair of positions of each image."""
    s = F.normalize(states.double(), dim=-1)
    return s @ s.transpose(1, 2)


@torch.no_grad()
def similarity(model: Heptapod, latents: str | Path, images: int, batch_size: int, show: int,
               queries: list[int], seed: int = 0) -> dict:
    """Mean cosine similarity by grid distance (rounded to whole cells) over ``images`` held-out
    images and all query positions, and the maps of ``queries`` for the first ``show`` images."""
    spec = model.spec
    dist = grid_distances(spec.grid_size).round().long()
    buckets = int(dist.max()) + 1
    total = torch.zeros(buckets, dtype=torch.float64)
    count = torch.zeros(buckets, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    maps = None
    for tokens, _ in heldout_batches(latents, images, batch_size):
        sim = cosine_maps(states_by_position(model, tokens, model.orders(len(tokens), gen)))
        if maps is None:
            maps = sim[:show][:, queries]  # (show, Q, N)
        total += torch.zeros(buckets, dtype=torch.float64).index_add_(0, dist.flatten(), sim.sum(0).flatten())
        count += torch.bincount(dist.flatten(), minlength=buckets).double() * len(sim)
    if maps is None:
        raise ValueError(f"{latents}: no held-out rows")
    by_distance = (total / count.clamp_min(1)).tolist()
    g = spec.grid_size
    return {"by_distance": by_distance[1:], "distances": list(range(1, buckets)),
            "near": by_distance[1], "far": float((total[g // 2:].sum() / count[g // 2:].sum())),
            "maps": maps.reshape(*maps.shape[:2], g, g).tolist(), "queries": queries,
            "grid_size": g, "images": images}
