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
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from heptapod.config import ModelConfig
from heptapod.models.diffloss import DiffLoss
from heptapod.models.heads import GlobalHead, LocalHead, NextTokenHead, SamplingContext
from heptapod.models.outputs import DiscreteOutput
from heptapod.models.transformer import Transformer, xavier_init
from heptapod.registry import HEADS, ORDERS



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
    window: int
    tokens: str = "discrete"
    token_dim: int = 1
    diffloss_width: int = 256
    diffloss_depth: int = 3
    diffloss_train_steps: int = 1000  # defaults: spec dicts of older checkpoints lack these
    diffloss_sample_steps: int = 100
    diffloss_batch_mul: int = 4
    diffloss_schedule: str = "cosine"

    @classmethod
    def from_config(cls, cfg: ModelConfig, vocab_size: int, grid_size: int, num_classes: int,
                    token_dim: int = 1):
        return cls(vocab_size=vocab_size, grid_size=grid_size, num_classes=num_classes,
                   token_dim=token_dim, **dataclasses.asdict(cfg))

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

    @property
    def window_size(self) -> int:
        """Positions the head predicts per step: N (global), w (local), 1 (1D)."""
        return {"global": self.num_positions, "local": self.window, "1d": 1}[self.head]


class Heptapod(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        spec.validate()
        self.spec = spec
        n, d = spec.num_positions, spec.width
        one_d = spec.head == "1d"
        self.class_emb = nn.Embedding(spec.num_classes, d)
        continuous = spec.tokens == "continuous"
        self.tok_emb = nn.Linear(spec.token_dim, d) if continuous else nn.Embedding(spec.vocab_size, d)
        self.pos_emb = nn.Parameter(torch.randn(n, d) * 0.02)
        # 1D baselines: the input also carries the position to be predicted next (RAR-style)
        self.next_pos_emb = nn.Parameter(torch.randn(n, d) * 0.02) if one_d else None
        depth = spec.backbone_depth + (spec.head_depth if one_d else 0)
        self.backbone = Transformer(d, depth, spec.num_heads, spec.mlp_ratio, causal=True)
        self.to_head = nn.Identity() if one_d else nn.Linear(d, d)
        args = (d, spec.head_depth, spec.num_heads, spec.mlp_ratio)
        self.head = {
            "global": lambda: GlobalHead(n, *args),
            "local": lambda: LocalHead(spec.grid_size, spec.window, *args),
            "1d": NextTokenHead,
        }[spec.head]()
        self.out = (DiffLoss(spec.token_dim, d, spec.diffloss_width, spec.diffloss_depth,
                             spec.diffloss_train_steps, spec.diffloss_sample_steps, spec.diffloss_batch_mul,
                             spec.diffloss_schedule) if continuous
                    else DiscreteOutput(d, spec.vocab_size))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        xavier_init(self)
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if hasattr(self.out, "initialize_weights"):  # DiffLoss keeps its adaLN-zero init
            self.out.initialize_weights()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters AdamW leaves undecayed: position tables, mask tokens
        and queries, embeddings, norms, biases, and all of DiffLoss (as MAR). Only the weight
        matrices of linear layers outside DiffLoss decay."""
        skip = set()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            in_diffloss = isinstance(self.out, DiffLoss) and prefix.startswith("out.")
            for name, _ in module.named_parameters(recurse=False):
                if in_diffloss or not (isinstance(module, nn.Linear) and name == "weight"):
                    skip.add(prefix + name)
        return skip

    # ------------------------------------------------------------------ pieces
    def orders(self, batch: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """Generation orders (B, N): order[b, t] is the grid position generated at step t + 1."""
        n = self.spec.num_positions
        if self.spec.order == "raster":
            return torch.arange(n, device=device).expand(batch, n).clone()
        # CPU RNG: the same orders on any device
        return torch.rand(batch, n, generator=generator).argsort(dim=1).to(device, non_blocking=True)

    def backbone_inputs(self, tokens: torch.Tensor, order: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
        """Inputs of steps 0..T for the first T tokens in generation order: (B, T + 1, D).

        Step 0 is the class embedding; step t is token x_t plus the embedding of its own
        position order[t - 1]. The 1D baselines add the embedding of the next position order[t].
        """
        t = tokens.shape[1]
        x = self.tok_emb(tokens) + self.pos_emb[order[:, :t]]  # (B, T, D)
        x = torch.cat([self.class_emb(labels)[:, None], x], dim=1)
        if self.next_pos_emb is not None:  # after the last token there is no next position
            nxt = self.next_pos_emb[order[:, :t + 1]]
            x = x + F.pad(nxt, (0, 0, 0, x.shape[1] - nxt.shape[1]))
        return x

    # ------------------------------------------------------------------ training
    def head_outputs(self, tokens: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
                     prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Supervised head outputs (M, D), their targets b * N + position, their prefix lengths.

        tokens (B, N) in grid (raster) order; labels (B,); order (B, N); prefix (B, n) prefix
        lengths in [0, N - 1] (ignored by the 1D head, which is supervised at every step).
        """
        return self.head.train_outputs(self.head_states(tokens, labels, order), order, prefix)

    def head_states(self, tokens: torch.Tensor, labels: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """Projected backbone states h_0..h_{N-1} (B, N, D) of whole sequences in ``order``."""
        seq = tokens[torch.arange(len(tokens), device=tokens.device)[:, None], order]  # generation order
        # The last token is never an input: at prefix N - 1 only one position is left.
        return self.to_head(self.backbone(self.backbone_inputs(seq[:, :-1], order, labels)))

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
             prefix: torch.Tensor, generator: torch.Generator | None = None,
             reduction: str = "mean") -> tuple[torch.Tensor, dict]:
        """Token loss over every supervised slot (tokens (B, N) ids or (B, N, C) latents),
        averaged ('mean') or summed ('sum': for exact gradient accumulation across processes)."""
        out, target, _ = self.head_outputs(tokens, labels, order, prefix)
        loss = self.out.loss(out, tokens.flatten(0, 1)[target], generator, reduction)
        return loss, {"supervised_slots": len(target)}

    def forward(self, *args, **kwargs) -> tuple[torch.Tensor, dict]:
        """The training loss: DistributedDataParallel hooks in through forward."""
        return self.loss(*args, **kwargs)

    def supervised_count(self, order: torch.Tensor, prefix: torch.Tensor) -> int:
        """Slots a batch supervises, known from the orders and prefixes alone."""
        return self.head.count(order, prefix)

    # ------------------------------------------------------------------ likelihood
    def next_position_outputs(self, tokens: torch.Tensor, labels: torch.Tensor,
                              order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Head outputs that predict each step's token, for every step of every sequence.

        Returns out (B * N, D) with row b * N + t the output, given the first t tokens of
        sequence b in ``order``, at the position generated at step t + 1 (the output sampling
        uses), and the flat target index b * N + position of that row. All N prefixes of a
        sequence go through the head in one call.
        """
        b, n_pos = order.shape
        if isinstance(self.head, GlobalHead):  # its last layer needs only the next slot
            target = torch.arange(b, device=order.device)[:, None] * n_pos + order
            return self.head.next_outputs(self.head_states(tokens, labels, order), order), target.flatten()
        prefix = torch.arange(n_pos, device=order.device).expand(b, n_pos)
        out, target, seen = self.head_outputs(tokens, labels, order, prefix)
        row = torch.div(target, n_pos, rounding_mode="floor")
        # keep the slot of the position generated next; the head also predicts the others
        keep = target - row * n_pos == order[row, seen]
        by_step = (row[keep] * n_pos + seen[keep]).argsort()
        return out[keep][by_step], target[keep][by_step]

    @torch.no_grad()
    def nll(self, tokens: torch.Tensor, labels: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """Per-step negative log-likelihood in nats, (B, N), of discrete tokens (B, N) under the
        given orders: -log p(token at order[t] | tokens at order[:t], class). Its sum over steps
        is the exact NLL of the autoregressive model under that order, for every head type."""
        if self.spec.tokens != "discrete":
            raise ValueError("nll: continuous tokens have no discrete likelihood (use diffusion_loss)")
        out, target = self.next_position_outputs(tokens, labels, order)
        logp = self.out.logits(out).double().log_softmax(dim=-1)
        return -logp.gather(1, tokens.flatten()[target][:, None])[:, 0].view(order.shape)

    @torch.no_grad()
    def diffusion_loss(self, tokens: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sequence DiffLoss training loss (B,) of continuous tokens (B, N, C) (noise MSE plus
        the variational-bound term of the learned variance), taken at every step's next position:
        the continuous runs' validation loss, not a likelihood."""
        if self.spec.tokens != "continuous":
            raise ValueError("diffusion_loss: discrete tokens are scored by nll")
        out, target = self.next_position_outputs(tokens, labels, order)
        n_pos, flat = order.shape[1], tokens.flatten(0, 1)
        return torch.stack([self.out.loss(out[i * n_pos:(i + 1) * n_pos],
                                          flat[target[i * n_pos:(i + 1) * n_pos]], generator)
                            for i in range(len(order))])

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, labels: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None, use_cache: bool = True,
               timer: dict | None = None, positions_per_step: int = 1,
               steps: int | None = None) -> torch.Tensor:
        """Generate token grids (B, N) of ids, or (B, N, C) latents, for class ``labels`` (B,).

        Positions are filled in the sample's order (uniformly random among the remaining ones for
        the random-order models), ``positions_per_step`` at a time, or by a cosine schedule over
        ``steps`` steps (:func:`fill_schedule`). Each step runs the head once (the local head:
        the tile of each position, batched in one call), reads the outputs at the positions it fills, samples their tokens and feeds them to the backbone
        in one chunk (KV cache; causal inside the chunk, in the order fed: a valid training
        order). Without ``use_cache`` the backbone recomputes the whole prefix (the baseline the
        cache is measured against). One position per step is the paper's sampler.
        """
        b, n_pos, d = labels.shape[0], self.spec.num_positions, self.spec.width
        sizes = fill_schedule(n_pos, positions_per_step, steps)
        if max(sizes) > 1 and self.spec.head == "1d":
            raise ValueError("sample.positions_per_step / sample.steps: the 1D baselines predict one next "
                             "position per step; only the 2D heads fill several")
        device = labels.device
        order = self.orders(b, generator, device)
        dtype = self.pos_emb.dtype
        tokens = (torch.zeros(b, n_pos, self.spec.token_dim, device=device, dtype=dtype)
                  if self.spec.tokens == "continuous" else torch.zeros(b, n_pos, dtype=torch.long, device=device))
        ctx = SamplingContext(torch.zeros(b, n_pos, d, device=device, dtype=dtype),
                              torch.zeros(b, n_pos, d, device=device, dtype=dtype),
                              torch.zeros(b, n_pos, dtype=torch.bool, device=device))
        arange = torch.arange(b, device=device)
        clock = _Clock(timer, device)

        with clock("backbone"):
            x0 = self.backbone_inputs(tokens[:, :0], order, labels)
            cache = self.backbone.new_cache(b, n_pos, x0) if use_cache else None
            ctx.states_by_step[:, 0] = self.to_head(self.backbone(x0, cache)[:, 0])
        t = 0
        for k in sizes:
            pos = order[:, t:t + k]  # (B, k)
            with clock("head"):
                z = self.head.step(ctx, pos)  # (B, k, D); the 1D head gives (B, D) with k = 1
                tok = self.out.sample(z.reshape(b * k, d), temperature, generator)
            # under autocast the outputs come in bf16; the buffers keep the model's dtype
            tok = tok.view(b, k, *tok.shape[1:]).to(tokens.dtype)
            tokens[arange[:, None], pos] = tok
            if t + k == n_pos:
                break
            with clock("backbone"):
                if use_cache:  # only the newest chunk goes through the backbone
                    x = self.tok_emb(tok) + self.pos_emb[pos]
                    if self.next_pos_emb is not None:
                        x = x + self.next_pos_emb[order[:, t + 1:t + 1 + k]]
                    h = self.backbone(x, cache)[:, -k:]
                else:
                    seq = tokens[arange[:, None], order[:, :t + k]]
                    h = self.backbone(self.backbone_inputs(seq, order, labels))[:, -k:]
                h = self.to_head(h).to(dtype)
            ctx.states_by_step[:, t + 1:t + 1 + k] = h
            ctx.states_by_pos[arange[:, None], pos] = h
            ctx.visible[arange[:, None], pos] = True
            t += k
            ctx.t = t
        return tokens


def fill_schedule(n_pos: int, positions_per_step: int = 1, steps: int | None = None) -> list[int]:
    """How many positions each sampling step fills: ``positions_per_step`` at a time, or, with
    ``steps`` S, MaskGIT/MAR's cosine schedule (after step s, floor(N cos(pi/2 (s+1)/S)) positions
    are left, at least one filled per step: few positions early, many late)."""
    if steps is not None:
        if not 1 <= steps <= n_pos:
            raise ValueError(f"sample.steps must be in [1, {n_pos}], got {steps}")
        sizes, left = [], n_pos
        for s in range(steps):
            keep = math.floor(n_pos * math.cos(math.pi / 2 * (s + 1) / steps))
            keep = max(min(keep, left - 1), steps - s - 1)
            sizes.append(left - keep)
            left = keep
        return sizes
    if positions_per_step < 1:
        raise ValueError(f"sample.positions_per_step must be >= 1, got {positions_per_step}")
    return [min(positions_per_step, n_pos - i) for i in range(0, n_pos, positions_per_step)]


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
