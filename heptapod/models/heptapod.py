"""Heptapod generator: a causal Transformer backbone plus a 2D prediction head (paper §4).

Backbone. The input at step t (1..N) is the token x_t plus the embedding of *its own* grid
position p_t; step 0 is the class embedding. Causal attention gives states h_0..h_N.

Global 2D head (window w = N). For a prefix of length t the head is a bidirectional
Transformer over N + 1 slots laid out in grid order: slot 0 holds the projected class state
h_0; the slot of a visible position p_i (i <= t) holds the projected state h_i, the one that
consumed that position's token; every other slot holds a learnable mask token. All slots get a
learnable position embedding. Every masked slot predicts its token (cross-entropy), so the
model predicts the distribution over the whole remaining grid at each step.

Supervision density n. The head is run at n prefix lengths per training sequence, drawn
without replacement from {0, ..., N - 1}; head compute per sequence is ~ w * n (the paper's
"tokens per sequence used for loss computation"). All n prefixes of a batch go through the
head in one call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from heptapod.config import ModelConfig
from heptapod.models.transformer import Transformer

HEADS = ("global",)
ORDERS = ("random", "raster")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a generator: the model params plus data-derived sizes."""

    vocab_size: int
    grid_size: int
    num_classes: int
    width: int
    backbone_depth: int
    head_depth: int
    num_heads: int
    mlp_ratio: float
    head: str
    order: str

    @classmethod
    def from_config(cls, cfg: ModelConfig, vocab_size: int, grid_size: int, num_classes: int):
        return cls(vocab_size=vocab_size, grid_size=grid_size, num_classes=num_classes,
                   **dataclasses.asdict(cfg))

    @property
    def num_positions(self) -> int:
        return self.grid_size ** 2

    def validate(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"model.head: unknown head '{self.head}' (known: {', '.join(HEADS)})")
        if self.order not in ORDERS:
            raise ValueError(f"model.order: unknown order '{self.order}' (known: {', '.join(ORDERS)})")
        if self.head_depth < 1 or self.backbone_depth < 1:
            raise ValueError("model.backbone_depth and model.head_depth must be >= 1")


class Heptapod(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        spec.validate()
        self.spec = spec
        n, d = spec.num_positions, spec.width
        self.class_emb = nn.Embedding(spec.num_classes, d)
        self.tok_emb = nn.Embedding(spec.vocab_size, d)
        self.pos_emb = nn.Parameter(torch.zeros(n, d))
        self.backbone = Transformer(d, spec.backbone_depth, spec.num_heads, spec.mlp_ratio, causal=True)
        self.to_head = nn.Linear(d, d)
        self.mask_token = nn.Parameter(torch.zeros(d))
        self.head_pos = nn.Parameter(torch.zeros(n + 1, d))
        self.head = Transformer(d, spec.head_depth, spec.num_heads, spec.mlp_ratio, causal=False)
        self.out = nn.Linear(d, spec.vocab_size)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.pos_emb, self.head_pos, self.mask_token):
            nn.init.normal_(p, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ pieces
    def orders(self, batch: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """Generation orders (B, N): order[b, t] is the grid position generated at step t + 1."""
        n = self.spec.num_positions
        if self.spec.order == "raster":
            return torch.arange(n, device=device).expand(batch, n).clone()
        return torch.rand(batch, n, generator=generator).argsort(dim=1).to(device)

    def backbone_inputs(self, tokens: torch.Tensor, positions: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
        """Class embedding, then token + own-position embeddings: (B, T + 1, D)."""
        x = self.tok_emb(tokens) + self.pos_emb[positions]  # (B, T, D)
        return torch.cat([self.class_emb(labels)[:, None], x], dim=1)

    def head_slots(self, states: torch.Tensor, slot0: torch.Tensor,
                   visible: torch.Tensor) -> torch.Tensor:
        """(B, N, D) projected states by position, (B, D), (B, N) bool -> (B, N + 1, D)."""
        grid = torch.where(visible[..., None], states, self.mask_token.to(states.dtype))
        return torch.cat([slot0[:, None], grid], dim=1) + self.head_pos

    # ------------------------------------------------------------------ training
    def head_outputs(self, tokens: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
                     prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Head outputs of every grid slot for every supervised prefix, and which are masked.

        tokens (B, N) in grid (raster) order; labels (B,); order (B, N); prefix (B, n) prefix
        lengths in [0, N - 1]. Returns out (B * n, N, D) and masked (B * n, N) bool.
        """
        b, n_pos = tokens.shape
        n = prefix.shape[1]
        d = self.spec.width
        seq = tokens.gather(1, order)  # tokens in generation order
        # The last token is never an input: at prefix N - 1 only one slot is left to predict.
        h = self.to_head(self.backbone(self.backbone_inputs(seq[:, :-1], order[:, :-1], labels)))
        rank = order.argsort(dim=1)  # (B, N): 0-based step at which each position is generated
        # h[:, r + 1] consumed the token generated at step r; position of rank N - 1 is never
        # visible (prefix <= N - 1), so clamping its index only avoids an out-of-range gather.
        by_pos = h.gather(1, (rank + 1).clamp(max=n_pos - 1)[..., None].expand(-1, -1, d))
        visible = (rank[:, None, :] < prefix[:, :, None]).reshape(b * n, n_pos)
        slots = self.head_slots(
            by_pos[:, None].expand(b, n, n_pos, d).reshape(b * n, n_pos, d),
            h[:, 0].repeat_interleave(n, dim=0),
            visible,
        )
        return self.head(slots)[:, 1:], ~visible

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
             prefix: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Mean cross-entropy over the masked slots of every supervised prefix."""
        out, masked = self.head_outputs(tokens, labels, order, prefix)
        logits = self.out(out[masked])  # (M, V): masked slots only
        target = tokens.repeat_interleave(prefix.shape[1], dim=0)[masked]
        loss = F.cross_entropy(logits.float(), target)
        return loss, {"masked_slots": int(masked.sum())}

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, labels: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None, use_cache: bool = True,
               timer: dict | None = None) -> torch.Tensor:
        """Generate token grids (B, N) for class ``labels`` (B,).

        One position per step in the sample's order (uniformly random among the remaining ones
        for the 2D-random model). The backbone is decoded with a KV cache; the bidirectional
        head re-runs over all N + 1 slots each step, and only the next position's slot is
        computed in its last layer.
        """
        b, n_pos, d = labels.shape[0], self.spec.num_positions, self.spec.width
        device = labels.device
        order = self.orders(b, generator, device)
        tokens = torch.zeros(b, n_pos, dtype=torch.long, device=device)
        visible = torch.zeros(b, n_pos, dtype=torch.bool, device=device)
        states = torch.zeros(b, n_pos, d, device=device, dtype=self.pos_emb.dtype)
        arange = torch.arange(b, device=device)
        clock = _Clock(timer, device)

        with clock("backbone"):
            x0 = self.class_emb(labels)[:, None]
            cache = self.backbone.new_cache(b, n_pos, x0) if use_cache else None
            slot0 = self.to_head(self.backbone(x0, cache)[:, 0])
        for t in range(n_pos):
            pos = order[:, t]
            with clock("head"):
                slots = self.head_slots(states, slot0, visible)
                out = self.head(slots, rows=(pos + 1)[:, None])[:, 0]  # (B, D)
                logits = self.out(out).float() / max(temperature, 1e-6)
                probs = logits.softmax(dim=-1)
                tok = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(device)
            tokens[arange, pos] = tok
            if t == n_pos - 1:
                break
            with clock("backbone"):
                if use_cache:
                    step_in = self.tok_emb(tok)[:, None] + self.pos_emb[pos][:, None]
                    h = self.backbone(step_in, cache)[:, -1]
                else:  # recompute the whole prefix (the baseline the cache is measured against)
                    seq = tokens.gather(1, order[:, :t + 1])
                    h = self.backbone(self.backbone_inputs(seq, order[:, :t + 1], labels))[:, -1]
                states[arange, pos] = self.to_head(h)
            visible[arange, pos] = True
        return tokens


class _Clock:
    """Accumulate wall time per named section into ``timer`` (no-op when it is None)."""

    def __init__(self, timer: dict | None, device: torch.device):
        self.timer, self.sync = timer, device.type == "cuda"

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.timer is None:
            yield
            return
        if self.sync:  # CUDA work is asynchronous: time it at the host only after it is done
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.sync:
            torch.cuda.synchronize()
        self.timer[name] = self.timer.get(name, 0.0) + time.perf_counter() - t0
