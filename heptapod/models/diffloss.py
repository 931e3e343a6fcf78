"""MAR-style diffusion loss for continuous tokens (paper §3, following MAR's DiffLoss).

A small residual MLP with adaLN (shift, scale, gate) conditioned on the head output z and a
sinusoidal timestep embedding maps a noised token to 2C channels, as MAR (``learn_sigma``): the
predicted noise, and v in [-1, 1] that sets the reverse step's log variance between the
clipped log posterior variance (v = -1) and log beta_t (v = 1) (improved DDPM's learned range).
The per-token loss is improved DDPM's hybrid loss, as MAR: the noise-prediction MSE plus the
variational-bound term in bits, i.e. KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) with the
model's mean detached (the bound trains only the variance), and at t = 0 the discretized
Gaussian decoder NLL (bins of width 2/255, as MAR). Noise schedule 'cosine' (MAR) or 'linear'
over ``train_steps`` steps; the loss is repeated over ``batch_mul`` noise draws per token (MAR's
"diffusion batch multiplier").

Sampling runs the reverse process on ``sample_steps`` evenly respaced steps (improved DDPM's
respacing: betas recomputed from alpha_bar at the kept steps, and the learned-range bounds from
those betas), the injected noise scaled by the temperature. With a fixed posterior variance a
short respaced chain under-disperses the samples; the learned variance corrects it. The x0
estimate is clipped to +-``x0_clip`` while sampling: at the noisiest steps of the cosine
schedule (alpha_bar ~ 1e-8) it divides the noise-prediction error by sqrt(alpha_bar), and
tokens are scaled to unit variance, so +-5 only removes that blow-up.

Arithmetic follows the dtype of z (float32 under bf16 autocast, float64 for a ``.double()``
model); the schedules are float64 CPU tensors, not buffers (``.float()`` would round them), and
are cast where they are used.
Contract as the discrete output: ``loss(z, target, generator, reduction)``,
``sample(z, temperature, generator)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from heptapod.models.transformer import xavier_init

SCHEDULES = ("cosine", "linear")


def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> torch.Tensor:
    t = torch.linspace(0, steps, steps + 1, dtype=torch.float64, device="cpu") / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)  # (steps,)


def linear_alphas_cumprod(steps: int) -> torch.Tensor:
    """DDPM's betas 1e-4 .. 0.02 at 1000 steps, scaled by 1000 / steps (improved DDPM)."""
    scale = 1000 / steps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64, device="cpu")
    return torch.cumprod(1 - betas, dim=0)


def alphas_cumprod(schedule: str, steps: int) -> torch.Tensor:
    if schedule == "cosine":
        return cosine_alphas_cumprod(steps)
    if schedule == "linear":
        return linear_alphas_cumprod(steps)
    raise ValueError(f"model.diffloss_schedule: unknown schedule '{schedule}' (known: {', '.join(SCHEDULES)})")


def respaced_steps(train_steps: int, sample_steps: int) -> torch.Tensor:
    """``sample_steps`` evenly spaced steps of 0..train_steps - 1, both ends kept (improved DDPM)."""
    if not 2 <= sample_steps <= train_steps:
        raise ValueError(f"model.diffloss_sample_steps must lie in [2, diffloss_train_steps = {train_steps}], "
                         f"got {sample_steps}")
    stride = (train_steps - 1) / (sample_steps - 1)
    return torch.tensor([round(i * stride) for i in range(sample_steps)], device="cpu")


class Coefs(NamedTuple):
    """Per-step coefficients of a chain: (M, 1) tensors in training, floats in sampling."""

    sqrt_ab: torch.Tensor | float
    sqrt_1m_ab: torch.Tensor | float
    recip: torch.Tensor | float  # sqrt(1 / ab)
    recipm1: torch.Tensor | float  # sqrt(1 / ab - 1)
    coef_x0: torch.Tensor | float  # posterior mean = coef_x0 * x0 + coef_xt * x_t
    coef_xt: torch.Tensor | float
    min_log: torch.Tensor | float  # clipped log posterior variance
    max_log: torch.Tensor | float  # log beta


class Chain:
    """A diffusion chain on the kept steps ``timesteps`` of a schedule (float64, CPU).

    Respacing as improved DDPM: beta_i = 1 - ab[k_i] / ab[k_{i-1}], and every coefficient,
    the learned-range bounds included, derives from these betas. Keeping all steps gives the
    schedule itself. The network is always told the original step k_i.
    """

    def __init__(self, ab_full: torch.Tensor, timesteps: torch.Tensor):
        ab = ab_full[timesteps]
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        beta = 1 - ab / ab_prev
        post_var = beta * (1 - ab_prev) / (1 - ab)
        # the posterior variance is 0 at step 0: its log takes step 1's value there
        min_log = torch.cat([post_var[1:2], post_var[1:]]).log()
        self.timesteps = timesteps
        self.table = torch.stack([ab.sqrt(), (1 - ab).sqrt(), (1 / ab).sqrt(), (1 / ab - 1).sqrt(),
                                  beta * ab_prev.sqrt() / (1 - ab), (1 - ab_prev) * (1 - beta).sqrt() / (1 - ab),
                                  min_log, beta.log()], dim=1)  # (steps, 8)

    def __len__(self) -> int:
        return len(self.timesteps)

    def at(self, i: torch.Tensor, like: torch.Tensor) -> Coefs:
        """Coefficients of chain steps ``i`` (M,) as (M, 1) tensors on like's device and dtype."""
        cols = self.table[i].to(like.device, like.dtype, non_blocking=True).unbind(1)  # one transfer for all
        return Coefs(*(c[:, None] for c in cols))

    def step(self, i: int) -> Coefs:
        return Coefs(*self.table[i].tolist())


def x0_from_eps(c: Coefs, xt: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return c.recip * xt - c.recipm1 * eps


def posterior_mean(c: Coefs, x0: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    return c.coef_x0 * x0 + c.coef_xt * xt


def learned_log_variance(c: Coefs, v: torch.Tensor) -> torch.Tensor:
    """improved DDPM's learned range: log variance = frac * log beta + (1 - frac) * min_log."""
    frac = (v + 1) / 2
    return frac * c.max_log + (1 - frac) * c.min_log


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor,
              logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp()
                  + (mean1 - mean2).pow(2) * (-logvar2).exp())


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor,
                                        log_scale: torch.Tensor) -> torch.Tensor:
    """log P(bin of x) under N(mean, e^(2 log_scale)), bins of width 2/255 and open-ended bins
    beyond +-0.999 (improved DDPM's decoder, kept by MAR for latents), in nats."""
    inv_std = (-log_scale).exp()
    cdf_plus = torch.special.ndtr(inv_std * (x - mean + 1 / 255))
    cdf_min = torch.special.ndtr(inv_std * (x - mean - 1 / 255))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1 - cdf_min).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def timestep_embedding(t: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=dtype) / half)
    args = t.to(dtype)[:, None] * freqs[None]
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
        self.out = nn.Linear(width, 2 * token_dim)  # noise and variance weight v (learned range)
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
        c = self.time(timestep_embedding(t, self.width, x.dtype)) + self.cond(z)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift)


class DiffLoss(nn.Module):
    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int,
                 train_steps: int = 1000, sample_steps: int = 100, batch_mul: int = 4,
                 schedule: str = "cosine", x0_clip: float = 5.0):
        super().__init__()
        self.net = DenoiserMLP(token_dim, cond_dim, width, depth)
        self.token_dim = token_dim
        self.batch_mul = batch_mul
        self.sample_steps = sample_steps  # may be changed after construction
        self.x0_clip = x0_clip
        self.alphas_cumprod = alphas_cumprod(schedule, train_steps)
        self.train_chain = Chain(self.alphas_cumprod, torch.arange(train_steps, device="cpu"))
        self._sample_chains: dict[int, Chain] = {}
        self.sample_chain()  # reject a bad step count now, not at the first sample

    def initialize_weights(self) -> None:
        self.net.initialize_weights()

    def sample_chain(self) -> Chain:
        """The respaced chain of ``sample_steps`` steps."""
        if self.sample_steps not in self._sample_chains:
            steps = respaced_steps(len(self.alphas_cumprod), self.sample_steps)
            self._sample_chains[self.sample_steps] = Chain(self.alphas_cumprod, steps)
        return self._sample_chains[self.sample_steps]

    def predict(self, xt: torch.Tensor, t: torch.Tensor, z: torch.Tensor,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted noise and variance weight v, (M, C) each, in ``dtype``."""
        eps, v = self.net(xt, t, z).to(dtype).chunk(2, dim=1)
        return eps, v

    def loss(self, z: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None,
             reduction: str = "mean") -> torch.Tensor:
        """z (M, D) conditions, target (M, C) clean tokens -> per-token loss (noise MSE averaged
        over channels, plus the bound term in bits), averaged over the noise draws, then averaged
        ('mean') or summed ('sum') over tokens."""
        m, dtype = len(z), _compute_dtype(z)
        z = z.repeat(self.batch_mul, 1)
        x0 = target.repeat(self.batch_mul, 1).to(dtype)
        t_cpu = torch.randint(0, len(self.train_chain), (len(x0),), generator=generator)
        # drawn in float32 on the CPU: the same draws on any device and in any dtype. Copies from the
        # host are non-blocking: a blocking one waits for every kernel queued on the GPU.
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, dtype, non_blocking=True)
        c, t = self.train_chain.at(t_cpu, x0), t_cpu.to(x0.device, non_blocking=True)
        xt = c.sqrt_ab * x0 + c.sqrt_1m_ab * noise
        eps, v = self.predict(xt, t, z, dtype)
        mse = (eps - noise).pow(2).mean(dim=1)
        per_token = (mse + vb_term(c, x0, xt, eps.detach(), v, t == 0)).view(self.batch_mul, m).mean(0)
        return per_token.sum() if reduction == "sum" else per_token.mean()

    @torch.no_grad()
    def sample(self, z: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        chain, dtype = self.sample_chain(), _compute_dtype(z)
        x = torch.randn(len(z), self.token_dim, generator=generator).to(z.device, dtype, non_blocking=True)
        for i in reversed(range(len(chain))):
            c = chain.step(i)
            t = torch.full((len(x),), int(chain.timesteps[i]), device=z.device)
            eps, v = self.predict(x, t, z, dtype)
            x0 = x0_from_eps(c, x, eps).clamp(-self.x0_clip, self.x0_clip)
            if i == 0:  # the posterior mean at step 0 is x0 itself
                return x0
            noise = torch.randn(x.shape, generator=generator).to(x.device, dtype, non_blocking=True)
            x = posterior_mean(c, x0, x) + (0.5 * learned_log_variance(c, v)).exp() * temperature * noise
        return x


def _compute_dtype(z: torch.Tensor) -> torch.dtype:
    """float64 stays float64; bf16/fp16 (autocast) are computed in float32."""
    return torch.promote_types(z.dtype, torch.float32)


def vb_term(c: Coefs, x0: torch.Tensor, xt: torch.Tensor, eps: torch.Tensor, v: torch.Tensor,
            first: torch.Tensor) -> torch.Tensor:
    """improved DDPM's variational-bound term per token (M,) in bits: KL(q(x_{t-1} | x_t, x0) ||
    p(x_{t-1} | x_t)) averaged over channels, and the decoder NLL -log p(x0 | x_1) where ``first``
    (t = 0). ``eps`` comes detached, so the term trains the variance only."""
    mean = posterior_mean(c, x0_from_eps(c, xt, eps), xt)
    log_var = learned_log_variance(c, v)
    kl = normal_kl(posterior_mean(c, x0, xt), c.min_log, mean, log_var).mean(dim=1)
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).mean(dim=1)
    return torch.where(first, nll, kl) / math.log(2.0)
