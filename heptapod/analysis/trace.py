"""What happens inside a trained generator on held-out images: the states after each layer and
the attention weights of each layer, for the causal backbone and for the global 2D head.

The class label is an input of every generator here (step 0 is its class embedding). Analyses
of what the states *learned about the image* must not read the label back out of them, so the
step-0 input is the mean of all class embeddings: no label enters, and the input stays inside
the span the model was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from heptapod.data.store import LatentStore
from heptapod.models.heptapod import Heptapod
from heptapod.models.transformer import Attention


@dataclass
class Trace:
    """One batch through a model. Step t >= 1 consumed the token at grid position order[:, t-1]."""

    order: torch.Tensor  # (B, N)
    states: list[torch.Tensor]  # per causal layer: (B, N + 1, D) block outputs
    attention: list[torch.Tensor]  # per causal layer: (B, N + 1, N + 1), mean over heads
    backbone_depth: int  # causal layers that form the backbone (the 1D models' rest is their head)


def attention_weights(module: Attention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """Softmax attention of ``module`` on its (normed) input x: (B, T, T), mean over heads."""
    c = x.shape[-1]
    q, k, _ = module.qkv(x).split(c, dim=-1)
    q, k = module._split(q), module._split(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        t = x.shape[1]
        scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool, device=x.device).tril(), float("-inf"))
    return scores.softmax(-1).mean(1)


def _record(net: nn.Module, causal: bool, attention_too: bool = True):
    """Forward hooks on the blocks of a Transformer: their outputs and attention weights."""
    states, attention, hooks = [], [], []
    for block in net.blocks:
        if attention_too:
            hooks.append(block.attn.register_forward_hook(
                lambda m, args, out: attention.append(attention_weights(m, args[0], causal))))
        hooks.append(block.register_forward_hook(lambda m, args, out: states.append(out)))
    return states, attention, hooks


def label_free_inputs(model: Heptapod, seq: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Backbone inputs of all N tokens (generation order), step 0 the mean class embedding."""
    labels = torch.zeros(len(seq), dtype=torch.long, device=seq.device)
    x = model.backbone_inputs(seq, order, labels)
    # swap class 0's embedding for the mean; what else step 0 carries (the 1D models' next
    # position) stays
    x[:, 0] += model.class_emb.weight.mean(0) - model.class_emb.weight[0]
    return x


@torch.no_grad()
def trace(model: Heptapod, tokens: torch.Tensor, order: torch.Tensor, attention: bool = True) -> Trace:
    """Run the backbone on every token of ``tokens`` (B, N) (raster ids, or (B, N, C) latents)
    in ``order`` and record each causal layer (its attention weights only with ``attention``)."""
    seq = tokens[torch.arange(len(tokens))[:, None], order]
    states, weights, hooks = _record(model.backbone, causal=True, attention_too=attention)
    try:
        model.backbone(label_free_inputs(model, seq, order))
    finally:
        for h in hooks:
            h.remove()
    return Trace(order, states, weights, model.spec.backbone_depth)


@torch.no_grad()
def head_attention(model: Heptapod, tr: Trace, prefix: int) -> list[torch.Tensor]:
    """Attention of each layer of the global 2D head (B, N + 1, N + 1), slots in grid order
    (slot 0: the class state), after the first ``prefix`` tokens of each order."""
    h = model.to_head(model.backbone.norm(tr.states[-1]))[:, :-1]  # h_0..h_{N-1}, as in training
    p = torch.full((len(h), 1), prefix, dtype=torch.long)
    slots, _ = model.head.prefix_slots(h, tr.order, p)
    _, attention, hooks = _record(model.head.net, causal=False)
    try:
        model.head.net(slots)
    finally:
        for hk in hooks:
            hk.remove()
    return attention


def heldout_batches(latents: str | Path, images: int | None, batch_size: int):
    """(tokens, labels) of the first ``images`` rows (None: all) of a latent store (the
    unflipped view, latents at their posterior mean), in batches."""
    store = LatentStore(latents)
    try:
        m = store.num_rows if images is None else min(images, store.num_rows)
        for lo in range(0, m, batch_size):
            codes, labels = store.rows(lo, min(lo + batch_size, m))
            yield store.tokens(codes[:, 0]), labels
    finally:
        store.close()


def grid_distances(grid: int) -> torch.Tensor:
    """(N, N) Euclidean distance, in grid cells, between raster positions."""
    r, c = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    xy = torch.stack([r.flatten(), c.flatten()], 1).double()
    return torch.cdist(xy, xy)
