"""Attention distance: how far, in grid cells, each layer looks.

For a query step, the attention-weighted mean Euclidean distance between the grid position it
consumed and the positions its keys consumed (the class step left out, the weights renormalised
over the image's tokens), averaged over queries and held-out images. Beside it, the same mean
under uniform attention over the same keys: a causal layer in raster order can only look back,
so the baseline differs between orders and the ratio is what compares across them.

Backbone layers are the causal layers every model has; the head is the global 2D head's
bidirectional layers (run after half of each order's tokens) or, for the 1D models, their extra
causal layers.
"""

from __future__ import annotations

from pathlib import Path

import torch

from heptapod.analysis.trace import grid_distances, head_attention, heldout_batches, trace
from heptapod.models.heptapod import Heptapod


def _weighted(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per query (B, N): mean distance under attention w (B, N, N) over the image's tokens."""
    w = w.double()
    return (w * d).sum(-1) / w.sum(-1).clamp_min(1e-12)


@torch.no_grad()
def attention_distance(model: Heptapod, latents: str | Path, images: int, batch_size: int,
                       seed: int = 0) -> dict:
    """Per layer, mean attended distance (grid cells) and its uniform-attention baseline."""
    spec = model.spec
    n = spec.num_positions
    dist = grid_distances(spec.grid_size)
    gen = torch.Generator().manual_seed(seed)
    causal = torch.ones(n, n, dtype=torch.bool).tril().double()
    sums: dict[str, list[float]] = {}
    base = {"causal": 0.0, "head": float(dist.mean())}
    count = 0
    for tokens, _ in heldout_batches(latents, images, batch_size):
        order = model.orders(len(tokens), gen)
        tr = trace(model, tokens, order)
        d = dist[order[:, :, None], order[:, None, :]]  # (B, N, N): step t+1's position vs step j+1's
        layers = [("backbone" if i < tr.backbone_depth else "head", w[:, 1:, 1:]) for i, w in enumerate(tr.attention)]
        if spec.head == "global":
            layers += [("head", w[:, 1:, 1:]) for w in head_attention(model, tr, n // 2)]
        for i, (part, w) in enumerate(layers):
            dd = d if i < len(tr.attention) else dist.expand(len(w), n, n)
            sums.setdefault(f"{part}:{i}", []).append(float(_weighted(w, dd).sum()))
        base["causal"] += float(((d * causal).sum(-1) / causal.sum(-1)).sum())
        count += len(tokens) * n
    if not count:
        raise ValueError(f"{latents}: no held-out rows")
    out = {"backbone": [], "head": []}
    for key, parts in sums.items():
        out[key.split(":")[0]].append(sum(parts) / count)
    return {**out, "uniform_causal": base["causal"] / count, "uniform_head": base["head"],
            "head_kind": spec.head, "order": spec.order, "images": min(images, count // n),
            "head_prefix": n // 2 if spec.head == "global" else None}
