"""`heptapod bench-scale`: paper-scale throughput on synthetic latents (run here on a tiny preset)."""

import json

import pytest
import torch

from heptapod import scale_bench
from heptapod.cli import main
from heptapod.config import resolve
from heptapod.data.store import LatentStore


@pytest.mark.parametrize("variant,continuous,vocab", [(None, True, 0), ("2d-random-vq", False, 16384)])
def test_synthetic_latents_have_the_published_tokenizer_shape(tmp_path, params, variant, continuous, vocab):
    cfg = resolve(params, "imagenet-l", variant)  # MAR's kl16, or LlamaGen's VQ for Fig. 6
    store = LatentStore(scale_bench.synthetic_latents(cfg, tmp_path / "l.h5", rows=8))
    assert (store.grid_size, store.num_classes, store.continuous, store.vocab_size) == (16, 1000, continuous, vocab)
    assert store.token_dim == (16 if continuous else 1)
    codes, labels = store.batch(0, 4, seed=0)
    tokens = store.tokens(codes[:, 0], torch.Generator().manual_seed(0))
    assert tokens.shape == ((4, 256, 16) if continuous else (4, 256))


def test_bench_scale_writes_training_sampling_and_provenance(tmp_path):
    out = tmp_path / "bench.json"
    code = main(["bench-scale", "--preset", "smoke", "--threads", "1", "--batches", "4", "8", "--steps", "1",
                 "--positions", "1", "4", "--sample-batch", "4", "--out", str(out)])
    assert code == 0
    bench = json.loads(out.read_text())
    assert bench["complete"] and bench["preset"] == "smoke" and bench["machine"]["device"] == "cpu"
    rows = bench["train"]["rows"]
    assert [r["batch"] for r in rows] == [4, 8] and bench["train"]["largest_fitting_batch"] == 8
    assert all(r["images_per_s"] > 0 for r in rows)
    assert rows[1]["step_tflop"] == pytest.approx(2 * rows[0]["step_tflop"])  # FLOPs per image x batch
    n_pos = bench["model"]["grid"] ** 2
    assert [(s["positions_per_step"], s["steps"]) for s in bench["sample"]] == [(1, n_pos), (4, n_pos // 4)]
    assert all(s["images_per_s"] > 0 for s in bench["sample"])


def test_batch_ladder_stops_at_the_first_batch_that_does_not_fit(monkeypatch):
    tried = []

    def fake_time_training(cfg, model, store, batch, steps, image_flops, compiled=False):
        tried.append(batch)
        if batch >= 64:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return {"batch": batch, "images_per_s": float(batch)}

    monkeypatch.setattr(scale_bench, "time_training", fake_time_training)
    model = torch.nn.Linear(2, 2)
    out = scale_bench.batch_ladder(None, model, None, [16, 32, 64, 128], steps=1, image_flops=1.0)
    assert tried == [16, 32, 64]  # nothing larger is tried after the first that does not fit
    assert out["largest_fitting_batch"] == 32 and out["first_batch_out_of_memory"] == 64
    assert [r["batch"] for r in out["rows"]] == [16, 32]


def test_a_run_cut_short_leaves_its_measurements_marked_incomplete(tmp_path, params):
    """Every measurement is written as soon as it is taken; only the last write says complete."""
    cfg = resolve(params, "smoke", "2d-random")
    latents = scale_bench.synthetic_latents(cfg, tmp_path / "l.h5", rows=32, num_classes=4)
    written = []
    scale_bench.run_scale_bench(cfg, latents, [4], [2], sample_batch=2, steps=1, compile_batch=None,
                                write=lambda out: written.append(json.loads(json.dumps(out))))
    assert [w["complete"] for w in written] == [False, False, False, True]
    assert written[1]["train"]["rows"] and "sample" not in written[1]
