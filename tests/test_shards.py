"""Sharded, resumable latent extraction and sampling: any split into shards, and any kill and
re-run, gives the same stores as one uninterrupted job."""
import dataclasses

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from heptapod.data.store import StoreError, write_arrays
from heptapod.sample import merge_samples, sample_shard
from heptapod.tokenizers.stage import extract_latents, merge_latents
from heptapod.tokenizers.vq import TokenizerSpec, VQTokenizer
from heptapod.train import train
from heptapod.utils.blocks import BlockCache, shard_blocks
from heptapod.utils.io import save_checkpoint


def tokenizer_file(path, channels=1, codebook=16):
    torch.manual_seed(0)
    tok = VQTokenizer(TokenizerSpec("vq", channels, codebook, 4, 4, 4))
    save_checkpoint(path, {"kind": "tokenizer", "spec": tok.spec_dict(), "state_dict": tok.state_dict()})
    return path


def image_store(path, n=23):
    rng = np.random.default_rng(0)
    write_arrays(path, "images", {"images": rng.integers(0, 256, (n, 1, 12, 12)).astype(np.uint8),
                                  "labels": np.arange(n) % 3},
                 {"dataset": "toy", "split": "train", "num_classes": 3, "image_size": 12, "channels": 1})
    return path


def latents_cfg(smoke_cfg, **kw):
    return dataclasses.replace(smoke_cfg, latents=dataclasses.replace(
        smoke_cfg.latents, **{"batch_size": 5, "chunk_rows": 4, **kw}))


def read(path):
    with h5py.File(path) as f:
        return {k: f[k][:] for k in f}, dict(f.attrs)


def extract(cfg, tok, images, out, shards):
    parts = [out.with_name(f"part{i}.h5") for i in range(shards)]
    for i, part in enumerate(parts):
        extract_latents(cfg, tok, images, part, i, shards)
    merge_latents(parts, out, cfg.latents.chunk_rows)
    return read(out)


def test_shard_blocks_cover_every_block_once():
    for n, k in ((10, 3), (2, 5), (7, 1)):
        got = [b for s in range(k) for b in shard_blocks(n, s, k)]
        assert got == list(range(n))
    with pytest.raises(ValueError):
        shard_blocks(4, 2, 2)


def test_sharded_extraction_equals_one_job(tmp_path, smoke_cfg):
    cfg = latents_cfg(smoke_cfg)
    tok, images = tokenizer_file(tmp_path / "tok.pt"), image_store(tmp_path / "images.h5")
    one, attrs = extract(cfg, tok, images, tmp_path / "one.h5", 1)
    three, attrs3 = extract(cfg, tok, images, tmp_path / "three.h5", 3)
    assert one["codes"].shape == (23, 2, 3, 3)
    assert np.array_equal(one["codes"], three["codes"]) and np.array_equal(one["labels"], three["labels"])
    assert attrs["kind"] == "latents" and attrs["complete"] and "shard" not in attrs
    # rows are shuffled, labels travel with their codes, the flip view is the flipped image's code
    assert sorted(one["labels"].tolist()) == sorted((np.arange(23) % 3).tolist())
    assert not list(tmp_path.glob("*.blocks"))  # block folders are removed once a part is written


def test_killed_extraction_resumes_where_it_stopped(tmp_path, smoke_cfg, monkeypatch):
    cfg = latents_cfg(smoke_cfg)
    tok, images = tokenizer_file(tmp_path / "tok.pt"), image_store(tmp_path / "images.h5")
    straight, _ = extract(cfg, tok, images, tmp_path / "straight.h5", 1)
    saved, real_save = [], BlockCache.save

    def killed_after_two(self, block, arrays):
        if len(saved) == 2:
            raise KeyboardInterrupt("killed")
        saved.append(block)
        real_save(self, block, arrays)

    monkeypatch.setattr(BlockCache, "save", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        extract_latents(cfg, tok, images, tmp_path / "part.h5", 0, 1)
    assert not (tmp_path / "part.h5").exists() and len(list((tmp_path / "part.h5.blocks").glob("block-*"))) == 2
    monkeypatch.setattr(BlockCache, "save", real_save)
    recomputed = []
    monkeypatch.setattr(BlockCache, "save", lambda self, b, a: (recomputed.append(b), real_save(self, b, a)))
    extract_latents(cfg, tok, images, tmp_path / "part.h5", 0, 1)
    assert recomputed == [2, 3, 4]  # 23 images in blocks of 5: only the unfinished ones
    merge_latents([tmp_path / "part.h5"], tmp_path / "resumed.h5", 4)
    assert np.array_equal(read(tmp_path / "resumed.h5")[0]["codes"], straight["codes"])


def test_changed_parameters_never_reuse_stale_blocks(tmp_path):
    cache = BlockCache(tmp_path / "b", "params A")
    cache.save(0, {"x": np.ones(2)})
    assert BlockCache(tmp_path / "b", "params A").done(0)
    assert not BlockCache(tmp_path / "b", "params B").done(0)


def test_merge_rejects_parts_out_of_order(tmp_path, smoke_cfg):
    cfg = latents_cfg(smoke_cfg)
    tok, images = tokenizer_file(tmp_path / "tok.pt"), image_store(tmp_path / "images.h5")
    parts = [tmp_path / f"p{i}.h5" for i in range(2)]
    for i, p in enumerate(parts):
        extract_latents(cfg, tok, images, p, i, 2)
    with pytest.raises(StoreError, match=r"p1\.h5: holds shard 1 of 2, expected 0 of 2"):
        merge_latents(parts[::-1], tmp_path / "m.h5", 4)


def test_image_folder_extraction_with_loader_workers(tmp_path, smoke_cfg):
    """ImageFolder files are decoded (center crop) in DataLoader worker processes."""
    from heptapod.config import DataConfig
    from heptapod.data.images import prepare

    for c in range(2):
        (tmp_path / "train" / f"class{c}").mkdir(parents=True)
        for i in range(5):
            rgb = np.random.default_rng(10 * c + i).integers(0, 256, (20, 30, 3)).astype(np.uint8)
            Image.fromarray(rgb).save(tmp_path / "train" / f"class{c}" / f"{i}.jpg")
    data = DataConfig("image_folder", str(tmp_path), 12, 3, False, None, "test")
    prepare(data, "train", tmp_path / "index.h5")
    tok = tokenizer_file(tmp_path / "tok.pt", channels=3)
    in_process, _ = extract(latents_cfg(smoke_cfg), tok, tmp_path / "index.h5", tmp_path / "a.h5", 1)
    workers, _ = extract(latents_cfg(smoke_cfg, workers=2), tok, tmp_path / "index.h5", tmp_path / "b.h5", 2)
    assert in_process["codes"].shape == (10, 2, 3, 3)
    assert np.array_equal(in_process["codes"], workers["codes"])


@pytest.fixture
def generator_and_tokenizer(tmp_path, smoke_cfg, latent_store):
    cfg = dataclasses.replace(smoke_cfg, model=dataclasses.replace(smoke_cfg.model, width=16, num_heads=2),
                              train=dataclasses.replace(smoke_cfg.train, steps=2, batch_size=8, snapshots=0))
    train(cfg, latent_store, tmp_path / "run")
    return tmp_path / "run" / "model.pt", tokenizer_file(tmp_path / "tok.pt")  # 16 codes, grid 3


def test_sharded_sampling_equals_one_job_and_resumes(tmp_path, smoke_cfg, generator_and_tokenizer, monkeypatch):
    model, tok = generator_and_tokenizer
    cfg = dataclasses.replace(smoke_cfg.sample, num_samples=10, batch_size=3)
    sample_shard(cfg, model, tok, tmp_path / "one.h5")
    merge_samples([tmp_path / "one.h5"], tmp_path / "a.h5", tmp_path / "a.png", 2)
    parts = [tmp_path / f"s{i}.h5" for i in range(3)]
    for i, p in enumerate(parts):
        sample_shard(cfg, model, tok, p, i, 3)
    merge_samples(parts, tmp_path / "b.h5", tmp_path / "b.png", 2)
    a, b = read(tmp_path / "a.h5")[0], read(tmp_path / "b.h5")[0]
    assert a["images"].shape == (10, 1, 12, 12)
    assert np.array_equal(a["images"], b["images"]) and a["labels"].tolist() == [0, 1, 2, 3] * 2 + [0, 1]
    # kill after the first batch, then resume: same samples, first batch not redrawn
    drawn, real_save = [], BlockCache.save

    def killed(self, block, arrays):
        drawn.append(block)
        real_save(self, block, arrays)
        if len(drawn) == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(BlockCache, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        sample_shard(cfg, model, tok, tmp_path / "r.h5")
    sample_shard(cfg, model, tok, tmp_path / "r.h5")
    assert drawn == [0, 1, 2, 3]
    merge_samples([tmp_path / "r.h5"], tmp_path / "c.h5", tmp_path / "c.png", 2)
    assert np.array_equal(read(tmp_path / "c.h5")[0]["images"], a["images"])
