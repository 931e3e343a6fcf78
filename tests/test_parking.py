"""Parked training states (`heptapod park`): a part-way run resumed on another machine."""

import copy
import dataclasses
import json
import shutil

import pytest
import torch
from test_resume import cfg_for

from heptapod.config import ConfigError
from heptapod.parking import STAMP, park, read_stamp, seed_from_parked
from heptapod.train import train
from heptapod.utils.io import load_checkpoint

PROVENANCE = {"preset": "smoke", "variant": "2d-random", "commit": "abc"}


def steps_of(log) -> list[int]:
    return [json.loads(line)["step"] for line in log.read_text().splitlines()]


def same_weights(a, b) -> bool:
    a, b = load_checkpoint(a, "generator"), load_checkpoint(b, "generator")
    return all(torch.equal(a[key][name], b[key][name]) for key in ("state_dict", "ema") for name in a[key])


def test_a_parked_run_resumes_elsewhere_as_a_straight_run(tmp_path, smoke_cfg, latent_store):
    """Parked part-way on one machine, resumed in an empty folder (another machine's clone), the
    run ends with the weights, EMA, log and snapshots of a run trained straight through."""
    cfg = cfg_for(smoke_cfg)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, snapshots=3))
    train(cfg, latent_store, tmp_path / "straight")
    here = tmp_path / "here"
    train(cfg, latent_store, here, max_steps=3)  # stopping writes a checkpoint
    with (here / "log.running.jsonl").open("a") as f:  # step 4 logged, then killed before its checkpoint
        f.write(json.dumps({"step": 4, "loss": 1.0}) + "\n")
    stamp = park(here, tmp_path / "parked", cfg, with_snapshots=True, provenance=PROVENANCE)
    snapshots = sorted(p.name for p in (tmp_path / "straight" / "snapshots").iterdir())
    assert stamp["step"] == 3 and stamp["snapshots"] == [n for n in snapshots if int(n[5:12]) <= 3] != snapshots
    assert steps_of(tmp_path / "parked" / "log.jsonl") == [1, 2, 3]  # not past its state
    elsewhere = tmp_path / "elsewhere"
    train(cfg, latent_store, elsewhere, parked=tmp_path / "parked")
    assert same_weights(tmp_path / "straight" / "model.pt", elsewhere / "model.pt")
    assert steps_of(elsewhere / "log.jsonl") == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (elsewhere / "snapshots").iterdir()) == snapshots


def test_a_parked_state_is_used_only_where_it_is_further_on(tmp_path, smoke_cfg, latent_store):
    """The machine's own state wins where it is as far or further on; a state parked under other
    parameters is ignored."""
    cfg = cfg_for(smoke_cfg)
    run = tmp_path / "run"
    train(cfg, latent_store, run, max_steps=2)
    park(run, tmp_path / "parked", cfg, with_snapshots=False, provenance=PROVENANCE)
    fp = load_checkpoint(run / "last.pt", "train-state")["fingerprint"]
    train(cfg, latent_store, run, max_steps=4)
    assert seed_from_parked(tmp_path / "parked", run, fp) is None  # here: step 4, parked: step 2
    assert load_checkpoint(run / "last.pt", "train-state")["step"] == 4
    assert seed_from_parked(tmp_path / "parked", tmp_path / "other", "other parameters") is None
    assert not (tmp_path / "other").exists()
    assert seed_from_parked(tmp_path / "nothing-parked", tmp_path / "other", fp) is None
    assert seed_from_parked(tmp_path / "parked", tmp_path / "fresh", fp) == 2
    assert load_checkpoint(tmp_path / "fresh" / "last.pt", "train-state")["step"] == 2


def test_parking_never_replaces_a_state_further_on_nor_keeps_other_parameters(tmp_path, smoke_cfg, latent_store):
    """A machine with an older state of the run (or one of the same steps) leaves the parked one
    as it is; a state trained with other parameters is not parked; seeding a folder whose state
    was trained with other parameters removes that training's snapshots."""
    cfg = cfg_for(smoke_cfg)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, snapshots=3))
    far, behind, parked = tmp_path / "far", tmp_path / "behind", tmp_path / "parked"
    train(cfg, latent_store, far, max_steps=4)
    train(cfg, latent_store, behind, max_steps=2)
    assert park(far, parked, cfg, with_snapshots=True, provenance=PROVENANCE)["step"] == 4
    assert park(behind, parked, cfg, with_snapshots=True, provenance=PROVENANCE) is None
    assert park(far, parked, cfg, with_snapshots=True, provenance=PROVENANCE) is None
    assert read_stamp(parked)["step"] == 4
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.5, snapshots=5))
    train(other, latent_store, tmp_path / "other", max_steps=5)
    with pytest.raises(ConfigError, match=r"other/last\.pt was trained with other model or train parameters"):
        park(tmp_path / "other", parked, cfg, with_snapshots=True, provenance=PROVENANCE)
    assert read_stamp(parked)["step"] == 4
    foreign = {p.name for p in (tmp_path / "other" / "snapshots").iterdir()} - set(read_stamp(parked)["snapshots"])
    assert foreign  # the other training's snapshots at steps the parked run has none
    fp = load_checkpoint(far / "last.pt", "train-state")["fingerprint"]
    assert seed_from_parked(parked, tmp_path / "other", fp) == 4
    assert sorted(p.name for p in (tmp_path / "other" / "snapshots").iterdir()) == read_stamp(parked)["snapshots"]


def test_broken_parked_states_are_errors_that_name_the_file(tmp_path, smoke_cfg, latent_store):
    cfg = cfg_for(smoke_cfg)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="no training state"):
        park(run, tmp_path / "parked", cfg, with_snapshots=False, provenance=PROVENANCE)
    train(cfg, latent_store, run, max_steps=2)
    parked = tmp_path / "parked"
    park(run, parked, cfg, with_snapshots=False, provenance=PROVENANCE)
    fp = read_stamp(parked)["fingerprint"]
    stamp = json.loads((parked / STAMP).read_text())
    (parked / STAMP).write_text(json.dumps({**stamp, "step": 6}))
    with pytest.raises(ConfigError, match=r"parked/last\.pt does not match its stamp"):
        seed_from_parked(parked, tmp_path / "fresh", fp)
    (parked / STAMP).write_text(json.dumps({**stamp, "snapshots": ["step-0000002.pt"]}))
    with pytest.raises(ConfigError, match="lacks the snapshots its stamp lists: step-0000002.pt"):
        seed_from_parked(parked, tmp_path / "fresh", fp)
    (parked / STAMP).write_text('{"step": 2}')
    with pytest.raises(ConfigError, match=r"parked/parked\.json: not a parked training state"):
        read_stamp(parked)
    train(cfg, latent_store, run)
    with pytest.raises(ConfigError, match="finished run"):
        park(run, parked, cfg, with_snapshots=False, provenance=PROVENANCE)
    shutil.rmtree(parked)
    assert read_stamp(parked) is None


def test_park_command_parks_part_way_runs_and_status_and_record_follow(params, tmp_path, monkeypatch, capsys):
    """`heptapod park` keeps every part-way run of the preset; on a machine without the run's own
    state the status names it parked, and recording the finished run removes the parked state."""
    from conftest import ROOT
    from test_records import RUN, score_run

    from heptapod import paths
    from heptapod.cli import main
    from heptapod.config import resolve, training_fingerprint
    from heptapod.status import preset_status, status_text
    from heptapod.utils.io import save_checkpoint

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    train_dir = paths.train_dir.of("smoke", RUN)
    fp = training_fingerprint(resolve(params, "smoke", RUN), "ab")
    save_checkpoint(train_dir / "last.pt", {"kind": "train-state", "step": 2, "fingerprint": fp, "state": {}})
    (train_dir / "log.running.jsonl").write_text(  # 2 steps/s
        "".join(json.dumps({"step": s, "elapsed_s": s / 2}) + "\n" for s in (1, 2, 3)))
    assert main(["park", "--preset", "smoke"]) == 0
    parked = paths.parked.of("smoke", RUN)
    assert f"parked {RUN} at step 2 -> {parked}" in capsys.readouterr().out
    stamp = read_stamp(parked)
    assert stamp["snapshots"] == [] and stamp["provenance"]["variant"] == RUN
    assert main(["park", "--preset", "smoke", "--runs", "no-such-run"]) == 2
    shutil.copytree(parked, tmp_path / "kept")
    shutil.rmtree(train_dir)  # another machine's clone: the parked state only
    rows = preset_status(params, "smoke")
    row = {r.run: r for r in rows}[RUN]
    assert (row.state, row.done) == ("parked", 2)
    assert row.estimated and row.left_s == pytest.approx((row.steps - 2) / 2)  # at its parked log's speed
    assert "1 parked (part-way in results/parked/smoke/: training resumes from there)" in status_text("smoke", rows)
    other = copy.deepcopy(params)
    other["presets"]["smoke"]["train"]["lr"] = 0.5  # the parked state is of another training: it starts over
    assert {r.run: r for r in preset_status(other, "smoke")}[RUN].state == "not started"
    score_run(resolve(params, "smoke", RUN))
    assert main(["record", "--preset", "smoke", "--runs", RUN]) == 0
    assert f"{RUN}: removed its parked state" in capsys.readouterr().out
    assert not parked.exists()
    shutil.copytree(tmp_path / "kept", parked)  # parked again, after the run was recorded
    assert main(["record", "--preset", "smoke", "--runs", RUN]) == 0
    out = capsys.readouterr().out
    assert f"{RUN}: already recorded" in out and f"{RUN}: removed its parked state" in out
    assert not parked.exists()


def test_train_command_resumes_from_the_runs_parked_state(params, tmp_path, monkeypatch):
    """`heptapod train --resume-parked` (the train rule's command) continues a run parked by
    `heptapod park` in a clone that holds none of its training state."""
    from conftest import ROOT, make_latent_store

    from heptapod import paths
    from heptapod.cli import main

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    latents = make_latent_store(tmp_path / "latents.h5")
    run_dir = paths.train_dir.of("smoke", "2d-random")
    command = ["train", "--preset", "smoke", "--variant", "2d-random", "--latents", str(latents),
               "--out-dir", str(run_dir)]
    assert main([*command, "--max-steps", "2"]) == 0
    assert main(["park", "--preset", "smoke"]) == 0
    shutil.rmtree(run_dir)
    assert main([*command, "--max-steps", "3", "--resume-parked"]) == 0
    parked_log = steps_of(paths.parked.of("smoke", "2d-random") / "log.jsonl")
    assert parked_log and steps_of(run_dir / "log.running.jsonl")[:len(parked_log)] == parked_log  # continued
    assert load_checkpoint(run_dir / "last.pt", "train-state")["step"] == 3
    shutil.rmtree(run_dir)
    assert main([*command, "--max-steps", "1"]) == 0  # without the flag: from the start
    assert load_checkpoint(run_dir / "last.pt", "train-state")["step"] == 1
