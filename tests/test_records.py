"""Run records (`heptapod record`): what a page reads of a finished run, kept in the repository."""

import copy
import json
import shutil

import pytest
from conftest import ROOT

from heptapod import paths
from heptapod.config import ConfigError, resolve
from heptapod.records import STAMP, matching_record, model_summary, up_to_date, write_record
from heptapod.report.runs import RunFiles, run_row
from heptapod.status import preset_status, status_text
from heptapod.utils.io import save_checkpoint, write_json

RUN = "depth-2-1"


def with_records(params) -> dict:
    params = copy.deepcopy(params)
    params["presets"]["smoke"].setdefault("workflow", {})["records"] = True
    return params


def score_run(cfg, preset: str = "smoke", run: str = RUN) -> dict:
    """The files the pipeline leaves of a scored run, with made-up contents of the right shape."""
    spec = {"grid_size": 3, "head": "global", "window": 9, "order": "random", "backbone_depth": 2,
            "head_depth": 1, "tokens": "discrete"}
    save_checkpoint(paths.model.of(preset, run), {
        "kind": "generator", "spec": spec, "steps": cfg.train.steps, "state_dict": {}, "num_params": 1234,
        "step_flops": 10, "train_flops": 10 * cfg.train.steps, "machine": "a CPU", "tokenizer_sha256": "ab"})
    write_json(paths.eval_metrics.of(preset, run), {"fid": 50.0, "is": 2.0, "kid": 3.0, "extractor": "dataset classifier",
                                                    "num_fake": 20, "num_real": 100, "commit": "abc"})
    write_json(paths.likelihood.of(preset, run), {"nll_bits_per_token": 3.5, "nll_bits_per_token_se": 0.1,
                                                  "heldout_images": 8, "nll_bits_per_token_per_image": [3.5] * 8})
    steps = cfg.train.steps
    log = [{"step": s, "elapsed_s": float(s), "val_nll_bits": 4.0 - s / steps} for s in (1, steps)]
    paths.train_log.of(preset, run).write_text("".join(json.dumps(r) + "\n" for r in log))
    paths.sample_grid.of(preset, run).parent.mkdir(parents=True, exist_ok=True)
    paths.sample_grid.of(preset, run).write_bytes(b"\x89PNG grid")
    return spec


def test_a_record_reads_as_the_run_it_was_made_from(params, tmp_path, monkeypatch):
    """A report reads the same row from the record as from the pipeline's files, and the record
    holds the checkpoint's summary, never its weights."""
    monkeypatch.chdir(tmp_path)
    params = with_records(params)
    cfg = resolve(params, "smoke", RUN)
    score_run(cfg)
    folder = paths.record_dir.of("smoke", RUN)
    stamp = write_record(cfg, "smoke", RUN, folder)
    assert stamp["provenance"]["preset"] == "smoke" and stamp["provenance"]["variant"] == RUN
    files = matching_record(cfg, folder)
    assert set(files) == {"metrics", "likelihood", "model", "log", "grid"}  # no FID curve for Table 4's run
    assert "state_dict" not in model_summary(files["model"])
    original = RunFiles(paths.eval_metrics.of("smoke", RUN), paths.likelihood.of("smoke", RUN),
                        paths.model.of("smoke", RUN), paths.train_log.of("smoke", RUN))
    recorded = RunFiles(files["metrics"], files["likelihood"], files["model"], files["log"])
    a, b = run_row(RUN, original), run_row(RUN, recorded)
    per_image = a.pop("nll_per_image"), b.pop("nll_per_image")
    assert json.dumps(a) == json.dumps(b) and (per_image[0] == per_image[1]).all()  # NaN == NaN too
    assert a["machine"] == "a CPU" and a["params_M"] == 1234e-6

    # recording it again would change nothing, until the run is scored again: scored again with
    # the same numbers (at another commit, on another day) it is still the same run
    assert up_to_date(cfg, "smoke", RUN, folder)
    rescored = {**json.loads(files["metrics"].read_text()), "commit": "0123456789", "created": "2030-01-01T00:00:00Z"}
    write_json(paths.eval_metrics.of("smoke", RUN), rescored)
    assert up_to_date(cfg, "smoke", RUN, folder)
    write_json(paths.eval_metrics.of("smoke", RUN), {**json.loads(files["metrics"].read_text()), "fid": 49.0})
    assert not up_to_date(cfg, "smoke", RUN, folder)

    # recorded: the status says so, and no training time is left for it
    paths.model.of("smoke", RUN).unlink()
    status = {r.run: r for r in preset_status(params, "smoke")}
    assert status[RUN].state == "recorded" and status[RUN].left_s == 0


def test_a_record_of_other_parameters_is_stale(params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve(params, "smoke", RUN)
    score_run(cfg)
    folder = paths.record_dir.of("smoke", RUN)
    write_record(cfg, "smoke", RUN, folder)
    other = copy.deepcopy(params)
    other["presets"]["smoke"]["sample"]["temperature"] = 0.9
    assert matching_record(resolve(other, "smoke", RUN), folder) is None
    # a run's thread count is not a parameter of its scores
    threads = copy.deepcopy(params)
    threads["presets"]["smoke"].setdefault("resources", {})["train"] = {"cpus": 2}
    assert matching_record(resolve(threads, "smoke", RUN), folder) is not None
    # without workflow.records the status never reads it
    paths.model.of("smoke", RUN).unlink()
    assert {r.run: r for r in preset_status(params, "smoke")}[RUN].state == "not started"
    # with it, the status names a stale record: the run trains again
    stale = {r.run: r for r in preset_status(with_records(other), "smoke")}
    assert stale[RUN].state == "stale record" and stale[RUN].done == 0
    assert "1 stale record (written under other parameters than the present ones): their runs train again" \
        in status_text("smoke", list(stale.values()))


def test_broken_records_are_errors_that_name_the_file(params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve(params, "smoke", RUN)
    with pytest.raises(FileNotFoundError, match="not scored yet: missing .*model.pt"):
        write_record(cfg, "smoke", RUN, tmp_path / "record")
    assert not (tmp_path / "record").exists()
    score_run(cfg)
    # a run trained under other parameters than the present ones is not recorded as if it were current
    last = paths.model.of("smoke", RUN).with_name("last.pt")
    save_checkpoint(last, {"kind": "train-state", "step": 1, "fingerprint": "other", "state": {}})
    with pytest.raises(ConfigError, match="trained with other model or train parameters"):
        write_record(cfg, "smoke", RUN, tmp_path / "record")
    last.unlink()
    folder = paths.record_dir.of("smoke", RUN)
    write_record(cfg, "smoke", RUN, folder)
    (folder / "log.jsonl").unlink()
    with pytest.raises(ConfigError, match="lists files it lacks: .*log.jsonl"):
        matching_record(cfg, folder)
    (folder / STAMP).write_text("{}")
    with pytest.raises(ConfigError, match=f"{STAMP}: not a run record"):
        matching_record(cfg, folder)
    (folder / "model.json").write_text('{"kind": "generator"}')
    with pytest.raises(ConfigError, match="not a generator summary"):
        model_summary(folder / "model.json")


def test_record_command_takes_the_preset_runs_only(capsys):
    from heptapod.cli import main

    assert main(["record", "--preset", "smoke", "--runs", "no-such-run"]) == 2
    assert "preset 'smoke' trains no run no-such-run" in capsys.readouterr().err


def test_record_command_records_every_complete_run_and_names_the_others(params, tmp_path, monkeypatch, capsys):
    """Without --runs: every run with all its files; a run scored before its FID-vs-training points
    (a seed replicate another family reads) is named and left out, not half recorded."""
    from heptapod.cli import main

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    score_run(resolve(params, "smoke", RUN))
    score_run(resolve(params, "smoke", "2d-random"), run="2d-random")  # Fig. 8's: no progress.json yet
    assert main(["record", "--preset", "smoke"]) == 0
    out = capsys.readouterr().out
    assert f"recorded {RUN}" in out and "2d-random: not recorded, scored without" in out and "progress.json" in out
    assert (paths.record_dir.of("smoke", RUN) / STAMP).is_file()
    assert not paths.record_dir.of("smoke", "2d-random").exists()
    assert main(["record", "--preset", "smoke"]) == 0  # nothing new: the record is left as it was
    assert f"{RUN}: already recorded" in capsys.readouterr().out


def test_a_run_retrained_but_not_scored_again_is_not_recorded(params, tmp_path, monkeypatch, capsys):
    """While the workflow redoes a run, its new model sits beside the old run's samples and scores
    until they are written again: a record then would pair the new model with the old scores."""
    import os

    from heptapod.cli import main

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    cfg = resolve(params, "smoke", RUN)
    score_run(cfg)
    model = paths.model.of("smoke", RUN)
    scores = [paths.eval_metrics.of("smoke", RUN), paths.likelihood.of("smoke", RUN), paths.sample_grid.of("smoke", RUN)]
    for path in scores:
        os.utime(path, ns=(model.stat().st_mtime_ns - 10**9,) * 2)  # scored a second before the model
    with pytest.raises(ConfigError, match=f"not scored since it was last trained: .*metrics.json.*older than .*{RUN}"):
        write_record(cfg, "smoke", RUN, tmp_path / "record")
    assert not (tmp_path / "record").exists()
    assert main(["record", "--preset", "smoke"]) == 0
    assert f"{RUN}: not recorded, retrained and not scored again yet" in capsys.readouterr().out
    assert not paths.record_dir.of("smoke", RUN).exists()
    # scored again: recorded
    for path in scores:
        os.utime(path)
    assert main(["record", "--preset", "smoke"]) == 0
    assert f"recorded {RUN}" in capsys.readouterr().out
