"""Resumable block-wise work: long, deterministic computations (latent extraction, 50k-sample
generation) cut into blocks whose results are kept as one ``.npz`` file each.

A killed job loses at most the block it was computing: on restart, finished blocks are read
back instead of recomputed. Each block file is written atomically, so a file that exists is
whole. The folder remembers the fingerprint of what produced it (parameters, input hashes);
when that changes, the old blocks are dropped rather than mixed with new ones. Shards of a job
are disjoint sets of block ids: ``shard_blocks(n, shard, shards)``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from heptapod.utils.io import atomic_path, write_json
from heptapod.utils.training import progress

log = logging.getLogger(__name__)


def shard_blocks(num_blocks: int, shard: int, shards: int) -> list[int]:
    """Block ids of one shard: a contiguous range, so merged parts keep the block order."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in [0, {shards})")
    lo, hi = num_blocks * shard // shards, num_blocks * (shard + 1) // shards
    return list(range(lo, hi))


class BlockCache:
    """Finished blocks of one job, in ``folder``, valid for one ``fingerprint``."""

    def __init__(self, folder: str | Path, fingerprint: str):
        self.folder = Path(folder)
        stamp = self.folder / "fingerprint.json"
        if self.folder.is_dir():
            try:
                old = json.loads(stamp.read_text())["fingerprint"]
            except (OSError, ValueError, KeyError):
                old = None
            if old != fingerprint:
                log.info("%s: made with other parameters or inputs; starting over", self.folder)
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not stamp.is_file():
            write_json(stamp, {"fingerprint": fingerprint})

    def path(self, block: int) -> Path:
        return self.folder / f"block-{block:07d}.npz"

    def done(self, block: int) -> bool:
        return self.path(block).is_file()

    def save(self, block: int, arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self.path(block)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def load(self, block: int) -> dict[str, np.ndarray]:
        path = self.path(block)
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"block file {path} is unreadable ({exc}); delete it to recompute") from exc

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def compute(self, blocks: Iterable[int], fn: Callable[[int], dict[str, np.ndarray]],
                units: Callable[[int], int], desc: str, unit: str = "img") -> None:
        """Run ``fn`` on every block not done yet; ``units(block)`` counts it for the progress bar."""
        blocks = list(blocks)
        total = sum(units(b) for b in blocks)
        done = sum(units(b) for b in blocks if self.done(b))
        if done:
            log.info("%s: resuming, %d of %d already done", desc, done, total)
        bar = progress(total, done, desc, unit)
        for b in blocks:
            if not self.done(b):
                self.save(b, fn(b))
                bar.update(units(b))
        bar.close()
