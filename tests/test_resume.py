import dataclasses
import json

import pytest
import torch

from conftest import make_latent_store
from heptapod.config import fingerprint, resolve
from heptapod.train import load_generator, train
from heptapod.utils.io import CheckpointError, load_checkpoint
from heptapod.utils.training import check_finite


def cfg_for(smoke_cfg, steps=6):
    return dataclasses.replace(
        smoke_cfg,
        model=dataclasses.replace(smoke_cfg.model, width=16, num_heads=2),
        train=dataclasses.replace(smoke_cfg.train, steps=steps, batch_size=8, ckpt_every=2,
                                  log_every=1, supervision_density=2),
    )


@pytest.mark.parametrize("variant", ["2d-random", "1d-random", "1d-raster", "w4-n16", "2d-random-kl"])
def test_kill_and_resume_equals_straight_run(tmp_path, params, variant):
    """Every head type (global 2D, 1D on random and raster orders, local window, DiffLoss on KL
    latents) resumes bit for bit."""
    cfg = cfg_for(resolve(params, "smoke", variant))
    # 4x4: room for a 2x2 window; KL runs read posterior moments
    token_dim = cfg.tokenizer.code_dim if cfg.model.tokens == "continuous" else None
    latent_store = make_latent_store(tmp_path / "latents.h5", grid=4, token_dim=token_dim)
    train(cfg, latent_store, tmp_path / "straight")
    # stopped after step 3 (stopping writes a checkpoint), then resumed to the end
    train(cfg, latent_store, tmp_path / "resumed", max_steps=3)
    assert not (tmp_path / "resumed" / "model.pt").exists()
    train(cfg, latent_store, tmp_path / "resumed")
    a = load_checkpoint(tmp_path / "straight" / "model.pt", "generator")
    b = load_checkpoint(tmp_path / "resumed" / "model.pt", "generator")
    for key in ("state_dict", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    log_a = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]


def test_resume_from_an_older_checkpoint_after_a_late_kill(tmp_path, smoke_cfg, latent_store):
    """A kill between checkpoints loses only the steps after the last checkpoint."""
    cfg = cfg_for(smoke_cfg)
    train(cfg, latent_store, tmp_path / "straight")
    run = tmp_path / "run"
    train(cfg, latent_store, run, max_steps=4)  # checkpoint at 4
    state = load_checkpoint(run / "last.pt", "train-state")
    assert state["step"] == 4
    with (run / "log.running.jsonl").open("a") as f:  # step 5 logged, then killed before its checkpoint
        f.write(json.dumps({"step": 5, "loss": 123.0}) + "\n" + '{"step": 6, "lo')
    train(cfg, latent_store, run)
    a = load_checkpoint(tmp_path / "straight" / "model.pt", "generator")["state_dict"]
    b = load_checkpoint(run / "model.pt", "generator")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resumed_run_keeps_its_log_when_its_outputs_were_removed(tmp_path, smoke_cfg, latent_store):
    """Snakemake and DVC delete a job's outputs (model.pt, log.jsonl) before they rerun it: the
    resumed run's log still starts at step 1, and its wall time counts the earlier session."""
    cfg = cfg_for(smoke_cfg)
    run = tmp_path / "run"
    train(cfg, latent_store, run, max_steps=4)
    assert not (run / "log.jsonl").exists()  # published only when the run ends
    elapsed = json.loads((run / "log.running.jsonl").read_text().splitlines()[-1])["elapsed_s"]
    train(cfg, latent_store, run)
    (run / "model.pt").unlink()
    (run / "log.jsonl").unlink()
    train(cfg, latent_store, run)  # the orchestrator reruns the finished job: nothing is lost
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert log[-1]["elapsed_s"] > elapsed


def test_changed_params_refuse_stale_state(tmp_path, smoke_cfg, latent_store):
    cfg = cfg_for(smoke_cfg)
    train(cfg, latent_store, tmp_path / "run", max_steps=2)
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.5))
    with pytest.raises(CheckpointError, match="other parameters"):
        train(other, latent_store, tmp_path / "run")


def test_bookkeeping_changes_resume_instead_of_restarting(tmp_path, smoke_cfg, latent_store):
    """Checkpoint and log intervals and the MFU peak are not in the run's fingerprint (nor in the
    train rule's params): a run resumed after editing them ends where a straight run does."""
    cfg = cfg_for(smoke_cfg)
    train(cfg, latent_store, tmp_path / "straight")
    train(cfg, latent_store, tmp_path / "run", max_steps=3)
    edited = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ckpt_every=5, log_every=3,
                                                                peak_tflops=1.0))
    assert fingerprint(edited, "model", "train") == fingerprint(cfg, "model", "train")
    train(edited, latent_store, tmp_path / "run")  # no StaleCheckpoint
    a = load_checkpoint(tmp_path / "straight" / "model.pt", "generator")["state_dict"]
    b = load_checkpoint(tmp_path / "run" / "model.pt", "generator")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, snapshots=3))
    assert fingerprint(other, "model", "train") != fingerprint(cfg, "model", "train")


def test_corrupt_checkpoint_names_file(tmp_path, smoke_cfg, latent_store):
    cfg = cfg_for(smoke_cfg, steps=2)
    train(cfg, latent_store, tmp_path / "run")
    path = tmp_path / "run" / "model.pt"
    load_generator(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"run/model\.pt is corrupt"):
        load_generator(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="holds 'train-state', expected 'generator'"):
        load_generator(tmp_path / "run" / "last.pt")


def test_non_finite_loss_stops_naming_the_step():
    check_finite(torch.tensor(1.0), 3, "train")
    with pytest.raises(FloatingPointError, match="step 7"):
        check_finite(torch.tensor(float("nan")), 7, "train")


def test_nan_during_training_stops_the_run(tmp_path, smoke_cfg, latent_store, monkeypatch):
    cfg = cfg_for(smoke_cfg)
    from heptapod.models.heptapod import Heptapod

    real_loss = Heptapod.loss

    def poisoned(self, *args, **kwargs):
        loss, info = real_loss(self, *args, **kwargs)
        return loss * float("inf"), info

    monkeypatch.setattr(Heptapod, "loss", poisoned)
    with pytest.raises(FloatingPointError, match="at step 0"):
        train(cfg, latent_store, tmp_path / "run")


def test_validation_at_every_snapshot_survives_resume(tmp_path, smoke_cfg, latent_store):
    """The EMA weights are scored on held-out images at each snapshot and at the end; a resumed
    run logs the same validation numbers as a straight one."""
    cfg = cfg_for(smoke_cfg)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, snapshots=2, val_images=6))
    train(cfg, latent_store, tmp_path / "straight", val_latents=latent_store)
    train(cfg, latent_store, tmp_path / "resumed", max_steps=3, val_latents=latent_store)
    train(cfg, latent_store, tmp_path / "resumed", val_latents=latent_store)

    def val(run):
        log = [json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return [(r["step"], r["val_nll_bits"], r["val_images"]) for r in log if "val_nll_bits" in r]

    assert [s for s, _, _ in val("straight")] == [2, 4, 6]  # snapshots at 2 and 4, and the end
    assert val("straight") == val("resumed")
    assert all(0 < v < 10 and n == 6 for _, v, n in val("straight"))
