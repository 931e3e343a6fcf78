"""Token outputs: turn a head output z (M, D) into a loss or a sampled token.

Contract (as MAR's DiffLoss): ``loss(z, target) -> scalar`` and
``sample(z, temperature, generator) -> tokens``. Discrete tokens use a linear layer and
cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DiscreteOutput(nn.Module):
    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.linear = nn.Linear(dim, vocab_size)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).float()

    def loss(self, z: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None,
             reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(self.logits(z), target, reduction=reduction)

    def sample(self, z: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
        probs = (self.logits(z) / max(temperature, 1e-6)).softmax(dim=-1)
        # torch.multinomial's rule for one draw, argmax of p / Exp(1), with the exponentials drawn on
        # the CPU: a seeded CPU generator gives the same tokens on any device (and the same as
        # torch.multinomial on the CPU), and a GPU never waits for the host to read its probabilities
        q = torch.empty(probs.shape).exponential_(1, generator=generator)
        return (probs / q.to(probs.device, non_blocking=True)).argmax(dim=-1)
