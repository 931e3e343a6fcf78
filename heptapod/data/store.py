"""HDF5 stores: prepared images, tokenizer latents and generated samples.

One file per (preset, split). Datasets are chunked along the sample axis and compressed;
attributes describe what produced them. Files are written to a temporary name and renamed,
so an interrupted write never leaves a store that looks complete (``complete`` attribute).

Latent store layout (``kind = "latents"``)::

    codes   (N, 2, G, G) int16   token grid of the image [:, 0] and of its horizontal flip [:, 1]
    labels  (N,)         int64
    attrs: tokenizer, tokenizer_sha256, grid_size, vocab_size, num_classes, latent_scale, ...

Rows are written in a seeded random order, so that the block-wise streaming loader below
mixes classes even when the source (an ImageFolder) is sorted by class.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np
import torch

from heptapod.utils.io import atomic_path


class StoreError(RuntimeError):
    """An HDF5 store is missing, corrupt, incomplete or lacks a dataset; names the file."""


def attr_value(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


class H5Writer:
    """Create a store atomically: datasets are filled, then the file is renamed into place."""

    def __init__(self, path: str | Path, kind: str, attrs: dict, chunk_rows: int = 1024):
        self.path = Path(path)
        self.kind = kind
        self.attrs = attrs
        self.chunk_rows = chunk_rows
        self._ctx = atomic_path(self.path, suffix=".h5.tmp")

    def __enter__(self) -> "H5Writer":
        self.tmp = self._ctx.__enter__()
        self.file = h5py.File(self.tmp, "w")
        return self

    def create(self, name: str, shape: tuple, dtype: Any) -> h5py.Dataset:
        chunks = (min(self.chunk_rows, max(shape[0], 1)), *shape[1:])
        if np.dtype(dtype) == object:  # strings (file names): variable length, uncompressed
            return self.file.create_dataset(name, shape=shape, dtype=h5py.string_dtype(), chunks=chunks)
        return self.file.create_dataset(
            name, shape=shape, dtype=dtype, chunks=chunks, compression="gzip", compression_opts=4,
            shuffle=True,
        )

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            for key, value in self.attrs.items():
                self.file.attrs[key] = value
            self.file.attrs["kind"] = self.kind
            self.file.attrs["complete"] = True
        self.file.close()
        return self._ctx.__exit__(exc_type, exc, tb)


def write_arrays(path: str | Path, kind: str, arrays: dict[str, np.ndarray], attrs: dict,
                 chunk_rows: int = 1024) -> None:
    with H5Writer(path, kind, attrs, chunk_rows) as w:
        for name, arr in arrays.items():
            w.create(name, arr.shape, arr.dtype)[...] = arr


def open_store(path: str | Path, kind: str, datasets: tuple[str, ...]) -> h5py.File:
    """Open a store read-only, checking it is complete, of the right kind and has ``datasets``."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"HDF5 store not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise StoreError(f"HDF5 store {path} is corrupt or not an HDF5 file: {exc}") from exc
    if f.attrs.get("kind") != kind or not f.attrs.get("complete", False):
        found = f.attrs.get("kind")
        f.close()
        raise StoreError(f"HDF5 store {path} is not a complete '{kind}' store (kind={found!r})")
    missing = [d for d in datasets if d not in f]
    if missing:
        f.close()
        raise StoreError(f"HDF5 store {path} lacks dataset(s): {', '.join(missing)}")
    n = {f[d].shape[0] for d in datasets}
    if len(n) > 1:
        f.close()
        raise StoreError(f"HDF5 store {path}: datasets {datasets} differ in length {sorted(n)}")
    return f


def read_arrays(path: str | Path, kind: str, datasets: tuple[str, ...],
                limit: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read whole datasets (or their first ``limit`` rows) and the attributes."""
    with open_store(path, kind, datasets) as f:
        try:
            arrays = {d: f[d][:limit] for d in datasets}
        except OSError as exc:
            raise StoreError(f"HDF5 store {path}: dataset unreadable (corrupt?): {exc}") from exc
        attrs = {k: attr_value(v) for k, v in f.attrs.items()}
    return arrays, attrs


PART_ATTRS = ("shard", "shards", "rows")  # what a part store adds to its final store's attributes


def write_part(out: str | Path, kind: str, attrs: dict, shard: int, shards: int, rows: tuple[int, int],
               datasets: dict[str, tuple[tuple, Any]], pieces: Iterable[tuple[int, dict[str, np.ndarray]]],
               chunk_rows: int = 1024) -> None:
    """One shard's part store (kind '<kind>-part'): rows [lo, hi) of the final store, filled from
    ``pieces`` (first row, {dataset: array}) one at a time, so a shard need not fit in memory.
    ``datasets`` maps each name to (shape of one row, dtype)."""
    lo, hi = rows
    with H5Writer(out, f"{kind}-part", {**attrs, "shard": shard, "shards": shards, "rows": [lo, hi]},
                  chunk_rows) as w:
        outs = {name: w.create(name, (hi - lo, *tail), dtype) for name, (tail, dtype) in datasets.items()}
        for start, arrays in pieces:
            for name, arr in arrays.items():
                outs[name][start - lo:start - lo + len(arr)] = arr


def merge_parts(parts: list[str | Path], out: str | Path, kind: str, same: tuple[str, ...],
                chunk_rows: int = 1024, summed: tuple[str, ...] = ()) -> tuple[dict, int]:
    """Join the part stores of shards 0..K-1 into one '<kind>' store, chunk by chunk (parts may
    exceed memory). The parts must be the shards in order, with contiguous rows, and agree on the
    attributes ``same`` (what produced them); ``summed`` attributes add up over the parts.
    Returns the merged store's attributes and its row count."""
    metas: list[dict] = []
    for k, path in enumerate(parts):
        with open_store(path, f"{kind}-part", ()) as f:
            meta = {key: attr_value(v) for key, v in f.attrs.items()}
            layout = {d: (f[d].shape[1:], f[d].dtype) for d in f}
        if (meta["shard"], meta["shards"]) != (k, len(parts)):
            raise StoreError(f"{path}: holds shard {meta['shard']} of {meta['shards']}, expected {k} of {len(parts)}")
        if metas and any(meta[a] != metas[0][a] for a in same):
            raise StoreError(f"{path}: made from other inputs ({', '.join(same)}) than {parts[0]}")
        if metas and int(meta["rows"][0]) != int(metas[-1]["rows"][1]):
            raise StoreError(f"{path}: rows {list(meta['rows'])} do not follow the previous shard's")
        metas.append(meta)
    n = int(metas[-1]["rows"][1])
    attrs = {k: v for k, v in metas[0].items() if k not in {*PART_ATTRS, "kind", "complete"}}
    attrs.update({a: float(sum(m[a] for m in metas)) for a in summed})
    with H5Writer(out, kind, attrs, chunk_rows) as w:
        outs = {d: w.create(d, (n, *tail), dtype) for d, (tail, dtype) in layout.items()}
        for path, meta in zip(parts, metas):
            lo, hi = (int(r) for r in meta["rows"])
            with open_store(path, f"{kind}-part", tuple(outs)) as f:
                for a in range(lo, hi, chunk_rows):
                    b = min(a + chunk_rows, hi)
                    for d, dataset in outs.items():
                        dataset[a:b] = f[d][a - lo:b - lo]
    return attrs, n


class LatentStore:
    """Streaming reader of a latent store: batches are read block-wise, never the whole file.

    The order of an epoch is a random permutation of the blocks (one HDF5 chunk each) with a
    random permutation inside every block; both derive from ``(seed, epoch)`` alone, so the
    batch at any step can be recomputed, which is what makes resumed training exact.
    """

    def __init__(self, path: str | Path, cache_blocks: int = 4):
        self.path = Path(path)
        self.file = open_store(self.path, "latents", ("labels",))
        name = "codes" if "codes" in self.file else "moments"
        if name not in self.file:
            self.file.close()
            raise StoreError(f"HDF5 store {self.path} lacks dataset(s): codes or moments")
        self.codes = self.file[name]  # (N, 2, G, G) codes or (N, 2, 2C, G, G) moments
        self.labels = self.file["labels"]
        self.attrs = {k: attr_value(v) for k, v in self.file.attrs.items()}
        self.block_rows = self.codes.chunks[0]
        self.num_rows = self.codes.shape[0]
        self.num_blocks = -(-self.num_rows // self.block_rows)
        self._blocks: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_blocks = cache_blocks
        self._epoch_order: tuple[tuple[int, int], np.ndarray] | None = None

    @property
    def grid_size(self) -> int:
        return int(self.attrs["grid_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.attrs["vocab_size"])

    @property
    def token_dim(self) -> int:
        return int(self.attrs.get("token_dim", 1))

    @property
    def continuous(self) -> bool:
        return self.attrs.get("tokenizer") == "kl"

    @property
    def num_classes(self) -> int:
        return int(self.attrs["num_classes"])

    def close(self) -> None:
        self.file.close()

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        if b not in self._blocks:
            lo, hi = b * self.block_rows, min((b + 1) * self.block_rows, self.num_rows)
            try:
                self._blocks[b] = (self.codes[lo:hi], self.labels[lo:hi])
            except OSError as exc:
                raise StoreError(f"HDF5 store {self.path}: block {b} unreadable: {exc}") from exc
            if len(self._blocks) > self._cache_blocks:
                self._blocks.popitem(last=False)
        self._blocks.move_to_end(b)
        return self._blocks[b]

    def epoch_order(self, epoch: int, seed: int) -> np.ndarray:
        key = (epoch, seed)
        if self._epoch_order is None or self._epoch_order[0] != key:
            rng = np.random.default_rng([seed, epoch])
            order = []
            for b in rng.permutation(self.num_blocks):
                lo, hi = b * self.block_rows, min((b + 1) * self.block_rows, self.num_rows)
                order.append(lo + rng.permutation(hi - lo))
            self._epoch_order = (key, np.concatenate(order))
        return self._epoch_order[1]

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.num_rows // batch_size

    def rows(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes or moments and labels of rows [lo, hi) in file order (held-out evaluation)."""
        dtype = np.float32 if self.continuous else np.int64
        try:
            codes, labels = self.codes[lo:hi].astype(dtype), self.labels[lo:hi].astype(np.int64)
        except OSError as exc:
            raise StoreError(f"HDF5 store {self.path}: rows {lo}-{hi} unreadable: {exc}") from exc
        return torch.from_numpy(codes), torch.from_numpy(labels)

    def tokens(self, view: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One view's codes (B, G, G) -> tokens (B, N) in raster order; or its moments
        (B, 2C, G, G) -> scaled latents (B, N, C): a posterior draw with ``generator``, else
        the posterior mean (deterministic, for held-out scores)."""
        if not self.continuous:
            return view.flatten(1)
        mean, logvar = view.chunk(2, dim=1)
        z = mean if generator is None else mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator)
        return (z * self.attrs["latent_scale"]).flatten(2).transpose(1, 2)

    def batch(self, step: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (B, 2, G, G) or moments (B, 2, 2C, G, G), and labels (B,), of step ``step``."""
        spe = self.steps_per_epoch(batch_size)
        if spe == 0:
            raise StoreError(f"{self.path}: {self.num_rows} rows < batch size {batch_size}")
        epoch, k = divmod(step, spe)
        rows = self.epoch_order(epoch, seed)[k * batch_size:(k + 1) * batch_size]
        blocks = rows // self.block_rows
        dtype = np.float32 if self.continuous else np.int64
        codes = np.empty((len(rows), *self.codes.shape[1:]), dtype=dtype)
        labels = np.empty(len(rows), dtype=np.int64)
        for b in np.unique(blocks):
            sel = blocks == b
            bc, bl = self._block(int(b))
            local = rows[sel] - b * self.block_rows
            codes[sel], labels[sel] = bc[local], bl[local]
        return torch.from_numpy(codes), torch.from_numpy(labels)
