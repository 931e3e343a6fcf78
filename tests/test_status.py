"""`heptapod status`: where a preset's runs stand, read from the files the pipeline writes."""

import json
import os

import pytest

from heptapod import paths
from heptapod.cli import main
from heptapod.status import preset_status, status_text, total_text


def write_log(path, records, torn=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + ('{"step": 9' if torn else ""))


def test_status_tells_scored_trained_part_way_and_not_started_runs_apart(params, tmp_path, monkeypatch):
    """A run with its final checkpoint and log is trained (scored once its metrics exist); a run
    with only a growing log is part-way, its speed taken from its recent records (a torn last
    line of a killed run ignored) and its time left from that speed; the rest have not started."""
    monkeypatch.chdir(tmp_path)
    runs = preset_status(params, "smoke")
    assert [r.state for r in runs] == ["not started"] * len(runs) and len(runs) >= 6
    scored, trained, part_way = (r.run for r in runs[:3])
    steps = runs[0].steps
    for run in (scored, trained):
        write_log(paths.train_log.of("smoke", run), [{"step": steps, "elapsed_s": 10.0}])
        paths.model.of("smoke", run).write_bytes(b"checkpoint")
    write_log(paths.eval_metrics.of("smoke", scored), [{"fid": 1.0}])
    running = paths.train_log.of("smoke", part_way).with_name("log.running.jsonl")
    # logged up to step 4; the validation record has no wall clock
    write_log(running, [{"step": 0, "val_nll_bits": 5.0}, {"step": 1, "elapsed_s": 10.0},
                        {"step": 2, "elapsed_s": 20.0}, {"step": 4, "elapsed_s": 21.0}], torn=True)
    os.utime(running, (1000.0, 1000.0))

    by_run = {r.run: r for r in preset_status(params, "smoke")}
    assert by_run[scored].state == "scored" and by_run[trained].state == "trained"
    assert by_run[scored].left_s == 0 and by_run[scored].done == steps
    p = by_run[part_way]
    assert p.state == "part-way" and p.done == 4
    assert p.steps_per_s == pytest.approx(3 / 11)  # over the last records, 1 -> 4 steps in 11 s
    assert p.left_s == pytest.approx((steps - 4) * 11 / 3)
    assert p.idle_s > 1e6  # its log has not grown since 1970: not training now
    others = [r for r in by_run.values() if r.run not in (scored, trained, part_way)]
    untimed = [r for r in others if not r.estimated]  # the rest have a trained twin (below)
    assert all(r.state == "not started" for r in others) and all(r.left_s is None for r in untimed)

    text = status_text("smoke", list(by_run.values()))
    assert f"smoke: {len(by_run)} runs: 1 scored, 1 trained, 1 part-way, {len(others)} not started" in text
    assert f"{steps * len(untimed)} steps of {len(untimed)} runs not started" in text


def test_status_command_names_an_unknown_preset(capsys):
    assert main(["status", "--preset", "no-such-preset"]) == 2
    assert "unknown preset 'no-such-preset'" in capsys.readouterr().err


def test_status_command_shows_the_doubling_chain_after_its_preset(capsys):
    assert main(["status", "--preset", "reference"]) == 0
    out = capsys.readouterr().out
    tails = [line.split(":")[0] for line in out.splitlines() if " runs: " in line]
    assert tails == ["reference", "reference-2x", "reference-4x", "reference-8x"]
    assert out.rstrip().splitlines()[-1].startswith("In all: ")


def test_a_run_not_started_is_timed_at_the_speed_of_its_trained_twin(params, tmp_path, monkeypatch):
    """Another seed of a trained run (same model and settings) is timed at that run's mean speed
    over its whole training, marked as an estimate; a run with no twin trained stays untimed."""
    monkeypatch.chdir(tmp_path)
    steps = preset_status(params, "smoke")[0].steps
    write_log(paths.train_log.of("smoke", "1d-raster"),
              [{"step": steps // 2, "elapsed_s": 1.0}, {"step": steps, "elapsed_s": 40.0}])
    paths.model.of("smoke", "1d-raster").write_bytes(b"checkpoint")
    by_run = {r.run: r for r in preset_status(params, "smoke")}
    twin = by_run["1d-raster@1"]
    assert twin.state == "not started" and twin.estimated
    assert twin.left_s == pytest.approx(40.0)
    assert by_run["2d-random"].left_s is None and not by_run["2d-random"].estimated
    assert not by_run["1d-raster"].estimated
    text = status_text("smoke", list(by_run.values()))
    assert "~1 min" in text
    assert "for 1 more at the speed of a run of the same model and settings trained here" in text


def test_a_fresh_folder_counts_its_runs_instead_of_timing_them(params, tmp_path, monkeypatch):
    """With no log anywhere, no run has a speed: the total says how many runs are to train, not
    '0 min left'."""
    monkeypatch.chdir(tmp_path)
    rows = preset_status(params, "smoke")
    assert rows and all(r.left_s is None for r in rows)
    assert total_text(rows) == (f"In all: {len(rows)} runs to train, none timed yet (a run is timed by its "
                                "own log, or by a run of the same model and settings trained here).")
