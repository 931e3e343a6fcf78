import os
from pathlib import Path

import numpy as np
import pytest
import torch

from heptapod.config import load_params, resolve
from heptapod.data.store import write_arrays

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HEPTAPOD_NO_PROGRESS", "1")
torch.set_num_threads(1)


def copy_workflow(dst: Path, params: bool = True) -> Path:
    """The workflow as a user's clone holds it (Snakefile, rules, profiles, the software
    environment its rules name, and params.yaml unless the test writes its own) in ``dst``."""
    import shutil

    for name in ("Snakefile", "environment.yml", *(["params.yaml"] if params else [])):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "workflow", dst / "workflow")
    (dst / "profiles").symlink_to("workflow/profiles")
    return dst


@pytest.fixture(scope="session")
def params():
    return load_params(ROOT / "params.yaml")


@pytest.fixture
def smoke_cfg(params):
    return resolve(params, "smoke", "2d-random")


def make_latent_store(path: Path, n: int = 96, grid: int = 3, vocab: int = 16, classes: int = 4,
                      chunk_rows: int = 32, seed: int = 0, token_dim: int | None = None) -> Path:
    """Random VQ codes, or with ``token_dim`` random KL posterior moments of that many channels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n).astype(np.int64)
    if token_dim is None:
        arrays = {"codes": rng.integers(0, vocab, size=(n, 2, grid, grid)).astype(np.int16), "labels": labels}
        attrs = {"vocab_size": vocab, "tokenizer": "vq"}
    else:  # mean, then log-variance, of each channel
        moments = np.concatenate([rng.normal(size=(n, 2, token_dim, grid, grid)),
                                  np.full((n, 2, token_dim, grid, grid), -4.0)], axis=2)
        arrays = {"moments": moments.astype(np.float32), "labels": labels}
        attrs = {"vocab_size": 0, "tokenizer": "kl", "token_dim": token_dim, "latent_scale": 1.0}
    write_arrays(path, "latents", arrays, {"grid_size": grid, "num_classes": classes,
                                           "tokenizer_sha256": "0" * 64, **attrs}, chunk_rows=chunk_rows)
    return path


@pytest.fixture
def latent_store(tmp_path):
    return make_latent_store(tmp_path / "latents.h5")
