"""Where a preset's runs stand (``heptapod status``): for presets that train for hours, which
runs are trained, which are part-way and how far, which are scored (or recorded: a committed
record stands in for them, ``heptapod.records``), and the training time left
at each part-way run's own recent speed, or, for a run not started yet, at the speed of a run of
the same model and training settings that has trained here (another seed, or a doubling link's
shorter budget). Read-only: it reads the files the pipeline writes (the
training logs, metrics), so it works while Snakemake runs, after it was stopped, or with none.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from heptapod import paths
from heptapod.config import Config, fingerprint, preset_names, resolve
from heptapod.parking import read_stamp as parked_stamp
from heptapod.parking import trained_with
from heptapod.records import matching_record, read_stamp
from heptapod.utils.training import log_lines, running_log

RECENT = 10  # log records the recent speed is taken over (25 steps each in the long presets)


@dataclass(frozen=True)
class RunStatus:
    run: str
    steps: int  # of its schedule
    done: int  # last logged step (0: not started)
    # 'not started' | 'part-way' | 'trained' | 'scored' | 'recorded' (a committed record stands in) |
    # 'stale record' (not started; its record was written under other parameters) | 'parked'
    # (not started here; its training state, committed part-way, resumes: heptapod.parking)
    state: str
    steps_per_s: float | None  # over its last RECENT log records
    idle_s: float | None  # since its log last grew (a part-way run that is not training grows none)
    key: str = ""  # what sets its time per step (speed_key)
    mean_steps_per_s: float | None = None  # a trained run's, over its whole training
    estimated_steps_per_s: float | None = None  # a run without a speed of its own: a twin's

    @property
    def left_s(self) -> float | None:
        """Training seconds left at its recent speed, else at a twin's (0 once trained; None: no
        speed known)."""
        if self.state in ("trained", "scored", "recorded"):
            return 0.0
        speed = self.steps_per_s or self.estimated_steps_per_s
        return (self.steps - self.done) / speed if speed else None

    @property
    def estimated(self) -> bool:
        return self.left_s not in (None, 0.0) and not self.steps_per_s


def speed_key(cfg: Config) -> str:
    """What sets a run's seconds per step on one machine: its model and training settings and its
    job's cores, but not its step count or seed (another seed or a longer schedule of the same
    model trains at the same speed)."""
    train = dataclasses.replace(cfg.train, steps=0, seed=0)
    return fingerprint(dataclasses.replace(cfg, train=train), "model", "train") + f"|{cfg.resources.train.cpus}"


def log_records(path: Path) -> list[dict]:
    """A training log's records with a step and a wall clock, a torn last line left out."""
    return [record for _, record in log_lines(path) if "step" in record and "elapsed_s" in record]


def run_status(params: dict, preset: str, run: str, now: float | None = None) -> RunStatus:
    cfg = resolve(params, preset, run)
    steps, key = cfg.train.steps, speed_key(cfg)
    log = paths.train_log.of(preset, run)
    running = running_log(log)
    if paths.model.of(preset, run).is_file() and log.is_file():
        state = "scored" if paths.eval_metrics.of(preset, run).is_file() else "trained"
        records = log_records(log)
        last = records[-1] if records else {}
        mean = last["step"] / last["elapsed_s"] if last.get("elapsed_s") else None
        return RunStatus(run, steps, steps, state, None, None, key, mean)
    if not running.is_file() or not (records := log_records(running)):
        folder = paths.record_dir.of(preset, run)
        if cfg.workflow.records and matching_record(cfg, folder):
            return RunStatus(run, steps, steps, "recorded", None, None, key)
        # a record written under other parameters stands in for nothing: the run trains again
        stale = cfg.workflow.records and read_stamp(folder) is not None
        parked_dir = paths.parked.of(preset, run)
        parked = parked_stamp(parked_dir)
        if not stale and parked is not None and trained_with(parked["fingerprint"], cfg):  # else it starts over
            # timed (~) at the speed it trained at where it was parked
            speed = _recent_speed(log_records(parked_dir / "log.jsonl"))
            return RunStatus(run, steps, parked["step"], "parked", None, None, key, estimated_steps_per_s=speed)
        return RunStatus(run, steps, 0, "stale record" if stale else "not started", None, None, key)
    speed = _recent_speed(records)
    idle = (time.time() if now is None else now) - running.stat().st_mtime
    return RunStatus(run, steps, int(records[-1]["step"]), "part-way", speed, idle, key)


def _recent_speed(records: list[dict]) -> float | None:
    """Steps/s over a log's last RECENT records (None: too few, or no time between them)."""
    recent = records[-RECENT - 1:]
    seconds = recent[-1]["elapsed_s"] - recent[0]["elapsed_s"] if recent else 0
    return (recent[-1]["step"] - recent[0]["step"]) / seconds if seconds > 0 else None


def measured_speeds(params: dict) -> dict[str, float]:
    """Steps/s by speed_key of every run of every preset that trains or trained here: a part-way
    run's recent speed first, else a trained run's mean."""
    speeds: dict[str, float] = {}
    for preset in preset_names(params):
        for r in _own_status(params, preset):
            speed = r.steps_per_s or r.mean_steps_per_s
            if speed and (r.steps_per_s or r.key not in speeds):
                speeds[r.key] = speed
    return speeds


def preset_status(params: dict, preset: str, speeds: dict[str, float] | None = None) -> list[RunStatus]:
    """Every run the preset's 'ablations' target trains, in its families' order; a run without a
    speed of its own is timed at the speed of a twin (same speed_key) from any preset
    (``speeds``: measured_speeds, taken once for several presets)."""
    speeds = measured_speeds(params) if speeds is None else speeds
    return [dataclasses.replace(r, estimated_steps_per_s=speeds.get(r.key)) if r.left_s is None else r
            for r in _own_status(params, preset)]


def _own_status(params: dict, preset: str) -> list[RunStatus]:
    return [run_status(params, preset, run) for run in resolve(params, preset).workflow.runs()]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def status_text(preset: str, rows: list[RunStatus]) -> str:
    """A table of the runs and a line of totals."""
    lines = [f"{'run':<18} {'state':<12} {'steps':>13} {'steps/s':>8} {'left':>8}  last log"]
    for r in rows:
        speed = f"{r.steps_per_s:.2f}" if r.steps_per_s else "–"
        idle = f"{_duration(r.idle_s)} ago" if r.idle_s is not None else ""
        left = "" if r.left_s == 0 else ("~" if r.estimated else "") + _duration(r.left_s)
        lines.append(f"{r.run:<18} {r.state:<12} {f'{r.done}/{r.steps}':>13} {speed:>8} {left:>8}  {idle}".rstrip())
    states = ("scored", "recorded", "trained", "part-way", "parked", "not started", "stale record")
    count = {s: sum(r.state == s for r in rows) for s in states}
    timed = [r for r in rows if r.steps_per_s and r.left_s]
    estimated = [r for r in rows if r.estimated]
    untimed = [r for r in rows if r.left_s is None]
    parts = [", ".join(f"{n} {s}" for s, n in count.items() if n)]
    if timed:
        parts.append(f"training left: {_duration(sum(r.left_s for r in timed))} for the part-way runs at their "
                     "recent speed (one job's time; parallel jobs share it)")
    if estimated:
        parts.append(f"~{_duration(sum(r.left_s for r in estimated))} for {len(estimated)} more at the speed "
                     "of a run of the same model and settings trained here, or a parked run's where it was "
                     "parked (~ in the table)")
    if untimed:
        parts.append(f"{sum(r.steps - r.done for r in untimed)} steps of {len(untimed)} runs not started "
                     "or without a speed yet")
    if count["parked"]:
        parts.append(f"{count['parked']} parked (part-way in results/parked/{preset}/: training resumes "
                     "from there)")
    if count["stale record"]:
        n = count["stale record"]
        parts.append(f"{n} stale record{'s' if n > 1 else ''} (written under other parameters than the present "
                     "ones): their runs train again")
    lines += ["", f"{preset}: {len(rows)} runs: " + "; ".join(parts) + "."]
    return "\n".join(lines)


def total_text(rows: list[RunStatus]) -> str:
    """One line for several presets' runs (a preset and its doubling chain): the training time left."""
    timed = [r.left_s for r in rows if r.left_s]
    untimed = [r for r in rows if r.left_s is None]
    if untimed and not timed:  # a fresh machine: nothing here to time the runs by
        return (f"In all: {len(untimed)} runs to train, none timed yet (a run is timed by its own log, or by "
                "a run of the same model and settings trained here).")
    line = (f"In all: {_duration(sum(timed))} of training left for one job at a time (divide by the jobs "
            "that run at once)")
    if untimed:
        line += f", and {len(untimed)} runs without a speed yet"
    return line + "."
