"""Small conv tokenizers: a LlamaGen-style VQ (discrete) and an LDM/MAR-style KL VAE (continuous).

VQ:

Codes and encoder outputs are L2-normalised before the nearest-neighbour lookup (cosine
similarity), which keeps codebook usage high with low-dimensional codes; the codebook is
initialised from encoder outputs of the first batch for the same reason. Loss: pixel MSE +
codebook loss + beta * commitment loss, straight-through gradients.

KL: the encoder gives a mean and log-variance per latent channel; loss: pixel MSE + a small KL
weight. ``latent_scale`` (1 / std of the latent means, measured after training, as MAR's 0.2325
for kl16) makes the generator's continuous tokens roughly unit-variance.
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
class TokenizerSpec:
    """Shared by both kinds; for 'kl' code_dim is the number of latent channels."""

    kind: str
    channels: int
    codebook_size: int
    code_dim: int
    downsample: int
    width: int

    @classmethod
    def from_config(cls, cfg: TokenizerConfig, channels: int, kind: str) -> "TokenizerSpec":
        return cls(kind, channels, cfg.codebook_size, cfg.code_dim, cfg.downsample, cfg.width)

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


def _encoder(spec: TokenizerSpec, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(spec.channels, spec.width, 3, padding=1)]
    ch = spec.width
    for _ in range(spec.stages):
        layers += [ResBlock(ch), nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1)]
        ch *= 2
    layers += [ResBlock(ch), nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 1)]
    return nn.Sequential(*layers)


def _decoder(spec: TokenizerSpec) -> nn.Sequential:
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

    def __init__(self, spec: TokenizerSpec):
        super().__init__()
        self.spec = spec
        self.encoder = _encoder(spec, spec.code_dim)
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


class KLTokenizer(nn.Module):
    """Images in [-1, 1] (B, C, H, W) <-> continuous latents (B, code_dim, H / ds, W / ds)."""

    def __init__(self, spec: TokenizerSpec):
        super().__init__()
        self.spec = spec
        self.encoder = _encoder(spec, 2 * spec.code_dim)
        self.decoder = _decoder(spec)
        self.register_buffer("scale", torch.ones(()))

    @property
    def latent_scale(self) -> float:
        return float(self.scale)

    def moments(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 2 * code_dim, g, g): means then log-variances (clamped as in LDM)."""
        mean, logvar = self.encoder(images).chunk(2, dim=1)
        return torch.cat([mean, logvar.clamp(-30.0, 20.0)], dim=1)

    def forward(self, images: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
        mean, logvar = self.moments(images).chunk(2, dim=1)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        recon = self.decoder(z)
        rec_loss = F.mse_loss(recon, images)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        return recon, rec_loss + kl_weight * kl, {"rec_mse": rec_loss.item(), "kl": kl.item()}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled latent means (the deterministic tokens used for reconstruction metrics)."""
        return self.moments(images).chunk(2, dim=1)[0] * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, code_dim, g, g) -> images."""
        return self.decoder(latents / self.scale).clamp(-1, 1)

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor) -> None:
        self.scale.fill_(1.0 / self.moments(images).chunk(2, dim=1)[0].std().clamp(min=1e-6))

    def spec_dict(self) -> dict:
        return dataclasses.asdict(self.spec)


TOKENIZERS = {"vq": VQTokenizer, "kl": KLTokenizer}


def build_tokenizer(spec: TokenizerSpec) -> nn.Module:
    return TOKENIZERS[spec.kind](spec)
