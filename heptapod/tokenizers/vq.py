"""A small LlamaGen-style VQ tokenizer: conv encoder/decoder, L2-normalised codebook.

Codes and encoder outputs are L2-normalised before the nearest-neighbour lookup (cosine
similarity), which keeps codebook usage high with low-dimensional codes; the codebook is
initialised from encoder outputs of the first batch for the same reason. Loss: pixel MSE +
codebook loss + beta * commitment loss, straight-through gradients.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from heptapod.config import TokenizerConfig


@dataclass(frozen=True)
class VQSpec:
    channels: int
    codebook_size: int
    code_dim: int
    downsample: int
    width: int

    @classmethod
    def from_config(cls, cfg: TokenizerConfig, channels: int) -> "VQSpec":
        return cls(channels, cfg.codebook_size, cfg.code_dim, cfg.downsample, cfg.width)

    @property
    def stages(self) -> int:
        stages = int(math.log2(self.downsample))
        if 2 ** stages != self.downsample:
            raise ValueError(f"tokenizer.downsample must be a power of 2, got {self.downsample}")
        return stages


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
            nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _encoder(spec: VQSpec) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(spec.channels, spec.width, 3, padding=1)]
    ch = spec.width
    for _ in range(spec.stages):
        layers += [ResBlock(ch), nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1)]
        ch *= 2
    layers += [ResBlock(ch), nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, spec.code_dim, 1)]
    return nn.Sequential(*layers)


def _decoder(spec: VQSpec) -> nn.Sequential:
    ch = spec.width * 2 ** spec.stages
    layers: list[nn.Module] = [nn.Conv2d(spec.code_dim, ch, 3, padding=1), ResBlock(ch)]
    for _ in range(spec.stages):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch // 2, 3, padding=1),
                   ResBlock(ch // 2)]
        ch //= 2
    layers += [nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, spec.channels, 3, padding=1)]
    return nn.Sequential(*layers)


class VQTokenizer(nn.Module):
    """Images in [-1, 1] (B, C, H, W) <-> token grids (B, H / ds, W / ds)."""

    latent_scale = 1.0  # discrete tokens: no scaling (kept for the common tokenizer interface)

    def __init__(self, spec: VQSpec):
        super().__init__()
        self.spec = spec
        self.encoder = _encoder(spec)
        self.decoder = _decoder(spec)
        self.codebook = nn.Embedding(spec.codebook_size, spec.code_dim)
        nn.init.normal_(self.codebook.weight)

    def _codes(self) -> torch.Tensor:
        return F.normalize(self.codebook.weight, dim=-1)

    def _latent(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(images), dim=1)  # (B, code_dim, g, g)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, code_dim, g, g) unit vectors -> indices (B, g, g) of the nearest codes."""
        return torch.einsum("bchw,kc->bhwk", z, self._codes()).argmax(dim=-1)

    @torch.no_grad()
    def init_codebook(self, images: torch.Tensor, generator: torch.Generator) -> None:
        """Data-dependent init: codes drawn from encoder outputs (fewer dead codes)."""
        z = self._latent(images).permute(0, 2, 3, 1).reshape(-1, self.spec.code_dim)
        pick = torch.randint(0, z.shape[0], (self.spec.codebook_size,), generator=generator)
        self.codebook.weight.copy_(z[pick] + 0.01 * torch.randn(z[pick].shape, generator=generator))

    def forward(self, images: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Reconstruction, total loss and stats for a training batch."""
        z = self._latent(images)
        idx = self.quantize(z)
        zq = self._codes()[idx].permute(0, 3, 1, 2)  # (B, code_dim, g, g)
        codebook_loss = F.mse_loss(zq, z.detach())
        commit_loss = F.mse_loss(z, zq.detach())
        zq = z + (zq - z).detach()  # straight-through estimator
        recon = self.decoder(zq)
        rec_loss = F.mse_loss(recon, images)
        loss = rec_loss + codebook_loss + beta * commit_loss
        return recon, loss, {"rec_mse": rec_loss.item(), "commit": commit_loss.item()}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantize(self._latent(images))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        zq = self._codes()[codes].permute(0, 3, 1, 2)
        return self.decoder(zq).clamp(-1, 1)

    def spec_dict(self) -> dict:
        return dataclasses.asdict(self.spec)
