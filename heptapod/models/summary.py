"""Parameter tables of any preset, built on the meta device (no memory, no weights)."""

from __future__ import annotations

import torch

from heptapod.config import Config
from heptapod.models.heptapod import Heptapod, ModelSpec


def spec_for(cfg: Config, num_classes: int) -> ModelSpec:
    """The generator a preset would build, with sizes derived from its data/tokenizer params."""
    grid = cfg.data.image_size // cfg.tokenizer.downsample
    continuous = cfg.model.tokens == "continuous"
    return ModelSpec.from_config(cfg.model, vocab_size=0 if continuous else cfg.tokenizer.codebook_size,
                                 grid_size=grid, num_classes=num_classes,
                                 token_dim=cfg.tokenizer.code_dim if continuous else 1)


def parameter_table(spec: ModelSpec) -> list[tuple[str, int]]:
    """(module, parameters) for each top-level part of the generator, then the total."""
    with torch.device("meta"):
        model = Heptapod(spec)
    rows = [(name, sum(p.numel() for p in child.parameters())) for name, child in model.named_children()]
    rows += [(name, p.numel()) for name, p in model.named_parameters(recurse=False)]
    rows = [(n, c) for n, c in rows if c]
    return rows + [("total", model.num_params())]


def format_table(rows: list[tuple[str, int]]) -> str:
    width = max(len(n) for n, _ in rows)
    return "\n".join(f"{n:<{width}}  {c:>13,}  {c / 1e6:9.2f}M" for n, c in rows)
