"""MAR-style diffusion loss for continuous tokens (paper §3, following MAR's DiffLoss).

A small residual MLP with adaLN (shift, scale, gate) conditioned on the head output z and a
sinusoidal timestep embedding predicts the noise added to a token. Cosine noise schedule with
``train_steps`` steps; the loss is repeated over ``batch_mul`` noise draws per token (MAR's
"diffusion batch multiplier"). Sampling runs the reverse process on ``sample_steps`` evenly
respaced steps with the posterior variance, the injected noise scaled by the temperature.
The x0 estimate is clipped to +-``x0_clip``: at the noisiest steps of the cosine schedule
(alpha_bar ~ 1e-8) it divides the noise-prediction error by sqrt(alpha_bar), and tokens are
scaled to unit variance, so +-5 only removes that blow-up.
Contract as the discrete output: ``loss(z, target)``, ``sample(z, temperature, generator)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from heptapod.models.transformer import xavier_init


def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> torch.Tensor:
    t = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)  # (steps,)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlockAdaLN(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DenoiserMLP(nn.Module):
    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.width = width
        self.inp = nn.Linear(token_dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(ResBlockAdaLN(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, token_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        xavier_init(self)
        for block in self.blocks:  # adaLN-zero: each block starts as the identity
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for layer in (self.final_ada[-1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        c = self.time(timestep_embedding(t, self.width)) + self.cond(z)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift)


class DiffLoss(nn.Module):
    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int,
                 train_steps: int = 1000, sample_steps: int = 100, batch_mul: int = 4,
                 x0_clip: float = 5.0):
        super().__init__()
        self.net = DenoiserMLP(token_dim, cond_dim, width, depth)
        self.batch_mul = batch_mul
        self.sample_steps = sample_steps
        self.x0_clip = x0_clip
        self.register_buffer("ab", cosine_alphas_cumprod(train_steps).float(), persistent=False)

    def initialize_weights(self) -> None:
        self.net.initialize_weights()

    def loss(self, z: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None,
             reduction: str = "mean") -> torch.Tensor:
        """z (M, D) conditions, target (M, C) clean tokens -> noise-prediction MSE per token,
        averaged over channels and noise draws, then averaged ('mean') or summed ('sum')."""
        m = len(z)
        z = z.repeat(self.batch_mul, 1)
        x0 = target.repeat(self.batch_mul, 1).float()
        t = torch.randint(0, len(self.ab), (len(x0),), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        ab = self.ab[t][:, None]
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        per_token = (self.net(xt, t, z).float() - noise).pow(2).mean(dim=1).view(self.batch_mul, m).mean(0)
        return per_token.sum() if reduction == "sum" else per_token.mean()

    @torch.no_grad()
    def sample(self, z: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        steps = torch.linspace(len(self.ab) - 1, 0, self.sample_steps).round().long()
        x = torch.randn(len(z), self.net.out.out_features, generator=generator).to(z.device)
        for i, t in enumerate(steps):
            ab = self.ab[t]
            ab_prev = self.ab[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0, device=z.device)
            eps = self.net(x, t.expand(len(x)).to(z.device), z).float()
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-self.x0_clip, self.x0_clip)
            if i + 1 == len(steps):
                return x0
            beta = 1 - ab / ab_prev
            mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x) / (1 - ab)
            var = beta * (1 - ab_prev) / (1 - ab)
            noise = torch.randn(x.shape, generator=generator).to(x.device)
            x = mean + var.sqrt() * temperature * noise
        return x
