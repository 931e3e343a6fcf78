"""The components a params file can name, and the contract each kind of component meets.

One table per kind maps the name used in params.yaml to the class it builds ("module:Class",
imported on use, so reading the names needs no torch). The params schema takes its enums from
these tables, so a misspelled value fails at validation, naming the key and the allowed values.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from heptapod.models.heads import SamplingContext

# model.head: what predicts each step's distribution (the paper's 2D head, or the 1D baselines)
HEADS = {
    "global": "heptapod.models.heads:GlobalHead",      # window w = N: the whole remaining grid
    "local": "heptapod.models.heads:LocalHead",        # a sqrt(w) x sqrt(w) tile around each position
    "1d": "heptapod.models.heads:NextTokenHead",       # next token only (the 1D baselines)
}
# model.tokens: how a token is read out of a head state, and the tokenizer kind it comes from
OUTPUTS = {
    "discrete": "heptapod.models.outputs:DiscreteOutput",  # VQ codes, cross-entropy
    "continuous": "heptapod.models.diffloss:DiffLoss",     # KL latents, a diffusion loss per token
}
TOKENIZER_OF_OUTPUT = {"discrete": "vq", "continuous": "kl"}
# the tokenizers the pipeline trains (or imports: tokenizer.vq_checkpoint / kl_checkpoint)
TOKENIZERS = {
    "vq": "heptapod.tokenizers.vq:VQTokenizer",
    "kl": "heptapod.tokenizers.vq:KLTokenizer",
}
ORDERS = ("random", "raster")  # model.order
DATASETS = ("fashion_mnist", "mnist", "image_folder")  # data.dataset


def load(table: dict[str, str], name: str) -> type:
    """The class registered under ``name``; an unknown name is a ValueError listing the known."""
    if name not in table:
        raise ValueError(f"unknown component '{name}' (known: {', '.join(table)})")
    module, cls = table[name].split(":")
    return getattr(importlib.import_module(module), cls)


class PredictionHead(Protocol):
    """Turns backbone states into the head states that predict tokens (module: nn.Module)."""

    def train_outputs(self, h: torch.Tensor, order: torch.Tensor, prefix: torch.Tensor) -> Any:
        """Outputs at every supervised slot of the given prefixes, and which tokens they predict."""

    def count(self, order: torch.Tensor, prefix: torch.Tensor) -> int:
        """Slots a batch supervises, known from orders and prefixes alone."""

    def step(self, ctx: SamplingContext, pos: torch.Tensor) -> torch.Tensor:
        """Sampling: the outputs at positions ``pos`` (B, k) given the prefix so far."""


class TokenOutput(Protocol):
    """Reads a token out of a head state: its training loss, and a sample."""

    def loss(self, z: torch.Tensor, target: torch.Tensor, generator: Any = None,
             reduction: str = "mean") -> torch.Tensor: ...

    def sample(self, z: torch.Tensor, temperature: float, generator: Any) -> torch.Tensor: ...


class Tokenizer(Protocol):
    """Images <-> token grids, and the spec that rebuilds it from a checkpoint."""

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def spec_dict(self) -> dict: ...


CONTRACTS = {"head": (HEADS, PredictionHead), "output": (OUTPUTS, TokenOutput),
             "tokenizer": (TOKENIZERS, Tokenizer)}
