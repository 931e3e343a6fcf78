"""Prediction heads behind one contract (paper §4.3, and the 1D baseline of Table 1).

Training: ``head.train_outputs(h, order, prefix)`` takes the projected backbone states
h (B, N, D) = h_0..h_{N-1} in generation order, the orders (B, N) and the supervised prefix
lengths (B, n), and returns
    out (M, D)      the head output of every supervised slot,
    target (M,)     the index b * N + grid position that slot predicts,
    visible (M,)    the prefix length t the slot was predicted from (tokens 1..t are known).
Sampling: ``head.step(ctx, pos)`` returns (B, D), the output at the next positions ``pos``.

- GlobalHead (w = N): bidirectional Transformer over N + 1 slots in grid order (slot 0: h_0;
  visible positions: the state that consumed their token; others: mask token); every masked
  slot is supervised.
- LocalHead (w < N): the grid is cut into square tiles of w positions; for the tile holding
  the next position, w learnable queries cross-attend to h_0..h_t, then self-attend within the
  tile (one attention block per layer more than the global head); the tile's not-yet-generated
  positions are supervised.
- NextTokenHead (1D): no head module; the head's layers are extra causal layers of the
  backbone, and h_t predicts the token at the next position only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from heptapod.models.transformer import CrossBlock, Transformer


@dataclass
class SamplingContext:
    """What the head may see while sampling, after t tokens."""

    states_by_step: torch.Tensor  # (B, N, D): h_0..h_t filled
    states_by_pos: torch.Tensor  # (B, N, D): state that consumed each visible position's token
    visible: torch.Tensor  # (B, N) bool
    t: int = 0


def _rows(b: int, n: int, device) -> torch.Tensor:
    return torch.arange(b, device=device).repeat_interleave(n)  # (B * n,)


class GlobalHead(nn.Module):
    def __init__(self, num_positions: int, dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.head_pos = nn.Parameter(torch.randn(num_positions + 1, dim) * 0.02)
        self.net = Transformer(dim, depth, heads, mlp_ratio, causal=False)

    def slots(self, states: torch.Tensor, slot0: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(B, N, D) states by position, (B, D), (B, N) bool -> (B, N + 1, D)."""
        grid = torch.where(visible[..., None], states, self.mask_token.to(states.dtype))
        return torch.cat([slot0[:, None], grid], dim=1) + self.head_pos

    def prefix_slots(self, h: torch.Tensor, order: torch.Tensor, prefix: torch.Tensor):
        """Slots (B * n, N + 1, D) of every supervised prefix, and which positions are visible."""
        b, n_pos, d = h.shape
        n = prefix.shape[1]
        rank = order.argsort(dim=1)  # (B, N): 0-based step at which each position is generated
        # h[:, r + 1] consumed the token generated at step r; the position of rank N - 1 is never
        # visible (prefix <= N - 1), so clamping its index only avoids an out-of-range gather.
        by_pos = h.gather(1, (rank + 1).clamp(max=n_pos - 1)[..., None].expand(-1, -1, d))
        visible = (rank[:, None, :] < prefix[:, :, None]).reshape(b * n, n_pos)
        slots = self.slots(by_pos.repeat_interleave(n, dim=0), h[:, 0].repeat_interleave(n, dim=0), visible)
        return slots, visible

    def next_outputs(self, h: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """(B * N, D): row b * N + t is the output at position order[b, t] given the first t
        tokens; every prefix in one call, the last layer computing only that slot."""
        b, n_pos, _ = h.shape
        slots, _ = self.prefix_slots(h, order, torch.arange(n_pos, device=h.device).expand(b, n_pos))
        return self.net(slots, rows=(order.reshape(-1) + 1)[:, None])[:, 0]

    def train_outputs(self, h: torch.Tensor, order: torch.Tensor, prefix: torch.Tensor):
        b, n_pos, _ = h.shape
        n = prefix.shape[1]
        slots, visible = self.prefix_slots(h, order, prefix)
        out = self.net(slots)[:, 1:]  # (B * n, N, D)
        masked = ~visible
        rows = _rows(b, n, h.device)
        target = (rows[:, None] * n_pos + torch.arange(n_pos, device=h.device))[masked]
        seen = prefix.reshape(-1)[:, None].expand(-1, n_pos)[masked]
        return out[masked], target, seen

    def count(self, order: torch.Tensor, prefix: torch.Tensor) -> int:
        """Supervised slots of a batch: every position not generated at each prefix."""
        return int((order.shape[1] - prefix).sum())

    def step(self, ctx: SamplingContext, pos: torch.Tensor) -> torch.Tensor:
        """Outputs (B, D) at the next positions ``pos`` (B,), or (B, k, D) at ``pos`` (B, k)."""
        slots = self.slots(ctx.states_by_pos, ctx.states_by_step[:, 0], ctx.visible)
        rows = (pos + 1) if pos.ndim == 2 else (pos + 1)[:, None]
        out = self.net(slots, rows=rows)  # last layer: only the slots being filled
        return out if pos.ndim == 2 else out[:, 0]


class LocalHead(nn.Module):
    def __init__(self, grid_size: int, window: int, dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        side = math.isqrt(window)
        if side * side != window or grid_size % side:
            raise ValueError(f"model.window {window} must be a square number whose side divides the "
                             f"grid side {grid_size}")
        tiles_per_row = grid_size // side
        r, c = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
        tile = (r // side) * tiles_per_row + c // side  # (G, G) tile of each position
        members = torch.stack([torch.nonzero(tile.flatten() == k)[:, 0] for k in range(tiles_per_row ** 2)])
        self.register_buffer("tile_of", tile.flatten(), persistent=False)  # (N,)
        self.register_buffer("members", members, persistent=False)  # (tiles, w) positions
        self.query = nn.Parameter(torch.randn(dim) * 0.02)
        self.head_pos = nn.Parameter(torch.randn(grid_size ** 2, dim) * 0.02)
        self.layers = nn.ModuleList(CrossBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def run(self, positions: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Queries of tile ``positions`` (R, w) against ``context`` (R, T, D) -> (R, w, D)."""
        x = self.query + self.head_pos[positions]
        for layer in self.layers:
            x = layer(x, context, mask)
        return self.norm(x)

    def _tiles(self, order: torch.Tensor, prefix: torch.Tensor):
        """Per supervised prefix: its batch row, length t, tile positions (R, w), masked (R, w)."""
        rows = _rows(*prefix.shape, order.device)
        t = prefix.reshape(-1)  # (B * n,)
        positions = self.members[self.tile_of[order[rows, t]]]  # tile of the position of step t + 1
        masked = order.argsort(dim=1)[rows[:, None], positions] >= t[:, None]  # not yet generated
        return rows, t, positions, masked

    def train_outputs(self, h: torch.Tensor, order: torch.Tensor, prefix: torch.Tensor):
        n_pos = h.shape[1]
        rows, t, positions, masked = self._tiles(order, prefix)
        allowed = torch.arange(n_pos, device=h.device)[None] <= t[:, None]  # h_0..h_t
        out = self.run(positions, h.repeat_interleave(prefix.shape[1], dim=0), allowed)
        target = (rows[:, None] * n_pos + positions)[masked]
        seen = t[:, None].expand_as(positions)[masked]
        return out[masked], target, seen

    def count(self, order: torch.Tensor, prefix: torch.Tensor) -> int:
        return int(self._tiles(order, prefix)[3].sum())

    def step(self, ctx: SamplingContext, pos: torch.Tensor) -> torch.Tensor:
        """Output (B, D) at ``pos`` (B,); for ``pos`` (B, k), (B, k, D): the tile of each position
        is run on the same prefix, all k tiles in one batched call."""
        flat = pos.reshape(-1)  # (B * k,)
        k = len(flat) // len(pos)
        positions = self.members[self.tile_of[flat]]  # (B * k, w)
        context = ctx.states_by_step[:, :ctx.t + 1]
        out = self.run(positions, context.repeat_interleave(k, dim=0) if k > 1 else context, None)
        col = (positions == flat[:, None]).float().argmax(dim=1)
        picked = out[torch.arange(len(flat)), col]
        return picked.view(*pos.shape, -1) if pos.ndim == 2 else picked


class NextTokenHead(nn.Module):
    """1D baseline: h_t predicts the token at the next position order[t] (no extra module)."""

    def train_outputs(self, h: torch.Tensor, order: torch.Tensor, prefix: torch.Tensor):
        b, n_pos, d = h.shape
        target = (torch.arange(b, device=h.device)[:, None] * n_pos + order).flatten()
        seen = torch.arange(n_pos, device=h.device).repeat(b)
        return h.reshape(b * n_pos, d), target, seen

    def count(self, order: torch.Tensor, prefix: torch.Tensor) -> int:
        return order.numel()

    def step(self, ctx: SamplingContext, pos: torch.Tensor) -> torch.Tensor:
        return ctx.states_by_step[:, ctx.t]
