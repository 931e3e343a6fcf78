"""Pre-norm Transformer blocks shared by the causal backbone and the bidirectional head.

Two inference conveniences beyond a plain block:
- ``KVCache``: keys/values of past steps, so causal decoding costs only the new tokens per step
  (one, or a chunk of several with causal attention inside the chunk);
- ``rows``: compute the outputs of only some query rows (the head's last layer needs just the
  slot of the next position during sampling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every linear layer inside ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class KVCache:
    """Pre-allocated keys and values of one attention layer: (B, heads, T_max, head_dim)."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, device, dtype):
        self.k = torch.empty(batch, heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)
        self.len = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        self.k[:, :, self.len:self.len + t] = k
        self.v[:, :, self.len:self.len + t] = v
        self.len += t
        return self.k[:, :, :self.len], self.v[:, :, :self.len]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        return x.view(b, t, self.heads, c // self.heads).transpose(1, 2)  # (B, H, T, hd)

    def forward(self, x: torch.Tensor, causal: bool, cache: KVCache | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)
        if rows is not None:  # queries of selected rows only: (B, R)
            q = q.gather(1, rows[..., None].expand(-1, -1, c))
        q, k, v = self._split(q), self._split(k), self._split(v)
        mask = None
        if cache is not None:
            past = cache.len
            k, v = cache.append(k, v)
            if past and t > 1 and causal:  # a chunk of t new tokens: all the past, causal inside
                mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            causal = causal and past == 0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and q.shape[2] > 1)
        y = y.transpose(1, 2).reshape(b, q.shape[2], c)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, causal: bool, cache: KVCache | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        h = self.attn(self.norm1(x), causal, cache, rows)
        if rows is not None:
            x = x.gather(1, rows[..., None].expand(-1, -1, x.shape[-1]))
        x = x + h
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of blocks and a final norm; ``causal`` fixes the attention pattern."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, causal: bool):
        super().__init__()
        self.causal = causal
        self.heads = heads
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def new_cache(self, batch: int, max_len: int, like: torch.Tensor) -> list[KVCache]:
        dim = self.norm.normalized_shape[0]
        return [KVCache(batch, self.heads, max_len, dim // self.heads, like.device, like.dtype)
                for _ in self.blocks]

    def forward(self, x: torch.Tensor, cache: list[KVCache] | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); with ``rows`` (B, R) the last layer returns (B, R, C)."""
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, self.causal, cache[i] if cache is not None else None,
                      rows if i == last else None)
        return self.norm(x)


class CrossAttention(nn.Module):
    """Queries attend to a separate context; ``mask`` (B, T_ctx) marks the keys allowed."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        hd = c // self.heads
        q = self.q(x).view(b, t, self.heads, hd).transpose(1, 2)
        k, v = self.kv(context).split(c, dim=-1)
        k = k.view(b, -1, self.heads, hd).transpose(1, 2)
        v = v.view(b, -1, self.heads, hd).transpose(1, 2)
        attn_mask = mask[:, None, None, :] if mask is not None else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class CrossBlock(nn.Module):
    """Local-head layer: cross-attention to the causal states, self-attention, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_ctx = nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, heads)
        self.block = Block(dim, heads, mlp_ratio)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.cross(self.norm_q(x), self.norm_ctx(context), mask)
        return self.block(x, causal=False)
