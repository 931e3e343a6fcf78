"""A run's unfinished training kept in the repository between sessions: its parked state.

A run longer than one session on one machine (the doubling chain's last link takes hours on 2
cores) would start over wherever its checkpoint is lost with the machine. Parking copies what exact
resumption needs into ``results/parked/<preset>/<run>/``, to be committed: the training state
(``last.pt``: model, EMA, optimizer and step, stamped with the parameters it was trained with),
the training log up to that step, and, for runs with FID-vs-training curves, the snapshots so far.
The train stage seeds a run from its parked state where the machine holds no state of its own, or
an older one; recording the finished run removes the parked state it no longer needs.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from heptapod.config import Config, ConfigError
from heptapod.config import fingerprint as params_fingerprint
from heptapod.paths import MODEL_FILE, STATE_FILE, STATE_KIND
from heptapod.records import read_stamp_file
from heptapod.utils.io import atomic_dir, atomic_path, load_checkpoint, write_json
from heptapod.utils.training import log_lines_up_to, running_log

logger = logging.getLogger(__name__)

LOG = "log.jsonl"
SNAPSHOTS = "snapshots"
STAMP = "parked.json"  # written last: a folder without it is incomplete and never read


def _snapshots_up_to(folder: Path, step: int) -> list[Path]:
    return [p for p in sorted(folder.glob("step-*.pt")) if int(p.stem.split("-")[1]) <= step]


def trained_with(state_fingerprint: str, cfg: Config) -> bool:
    """Whether a training state's stamp names the run's present model and train parameters (the
    tokenizer's hash that ends the stamp is checked where training resumes from it)."""
    return state_fingerprint.startswith(params_fingerprint(cfg, "model", "train"))


def park(train_dir: str | Path, out: str | Path, cfg: Config, with_snapshots: bool, provenance: dict) -> dict | None:
    """Copy an unfinished run's training state from ``train_dir`` into ``out``, replacing it whole;
    None (``out`` left as it is) where ``out`` holds a state of the same training as far on."""
    train_dir, out = Path(train_dir), Path(out)
    if (train_dir / MODEL_FILE).is_file():
        raise ConfigError(f"{train_dir} holds a finished run ({MODEL_FILE}): record it instead of parking it")
    if not (train_dir / STATE_FILE).is_file():
        raise ConfigError(f"{train_dir} holds no training state ({STATE_FILE}) to park")
    here = load_checkpoint(train_dir / STATE_FILE, STATE_KIND)
    if not trained_with(here["fingerprint"], cfg):
        raise ConfigError(f"{train_dir / STATE_FILE} was trained with other model or train parameters than the "
                          "present ones")
    parked = read_stamp(out)
    if parked is not None and parked["fingerprint"] == here["fingerprint"] and parked["step"] >= here["step"]:
        return None  # another machine's, further on: never overwritten by an older state
    with atomic_dir(out) as tmp:
        # the copy is read, not the original: training may replace the original meanwhile
        shutil.copyfile(train_dir / STATE_FILE, tmp / STATE_FILE)
        state = load_checkpoint(tmp / STATE_FILE, STATE_KIND)
        step = int(state["step"])
        log = running_log(train_dir / LOG)
        log = log if log.is_file() else train_dir / LOG  # the latter: runs logged before running logs
        (tmp / LOG).write_text("".join(line + "\n" for line, _ in log_lines_up_to(log, step)) if log.is_file() else "")
        snapshots = _snapshots_up_to(train_dir / SNAPSHOTS, step) if with_snapshots else []
        if snapshots:
            (tmp / SNAPSHOTS).mkdir()
            for snapshot in snapshots:
                shutil.copyfile(snapshot, tmp / SNAPSHOTS / snapshot.name)
        stamp = {"step": step, "fingerprint": state["fingerprint"], "snapshots": [p.name for p in snapshots],
                 "provenance": provenance}
        write_json(tmp / STAMP, stamp)
    return stamp


def unpark(folder: str | Path) -> bool:
    """Remove a parked state (its run is recorded); whether there was one. The stamp goes first:
    a removal cut short leaves a folder that is never read."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    (folder / STAMP).unlink(missing_ok=True)
    shutil.rmtree(folder)
    return True


def read_stamp(folder: str | Path) -> dict | None:
    """A parked state's stamp; None where the folder holds none; a corrupt one is an error."""
    return read_stamp_file(Path(folder) / STAMP, "a parked training state",
                           {"step": int, "fingerprint": str, "snapshots": list})


def _local_step(train_dir: Path, fingerprint: str) -> int:
    """The step of the machine's own state of the run; -1 where it has none under these parameters."""
    if not (train_dir / STATE_FILE).is_file():
        return -1
    state = load_checkpoint(train_dir / STATE_FILE, STATE_KIND)
    return int(state["step"]) if state.get("fingerprint") == fingerprint else -1


def seed_from_parked(parked: str | Path, train_dir: str | Path, fingerprint: str) -> int | None:
    """Copy a parked state into ``train_dir`` where it was trained with these parameters
    (``fingerprint``) and is further on than the state there; return its step, or None."""
    parked, train_dir = Path(parked), Path(train_dir)
    stamp = read_stamp(parked)
    if stamp is None:
        return None
    if stamp["fingerprint"] != fingerprint:
        logger.warning("%s was trained with other parameters: not resumed from", parked)
        return None
    local_step = _local_step(train_dir, fingerprint)
    if local_step >= stamp["step"]:
        return None
    state = load_checkpoint(parked / STATE_FILE, STATE_KIND)
    if state.get("step") != stamp["step"] or state.get("fingerprint") != fingerprint:
        raise ConfigError(f"{parked / STATE_FILE} does not match its stamp {parked / STAMP} (step or parameters)")
    if missing := [n for n in stamp["snapshots"] if not (parked / SNAPSHOTS / n).is_file()]:
        raise ConfigError(f"{parked} lacks the snapshots its stamp lists: {', '.join(missing)}")
    if local_step < 0:  # none here, or another training's: its snapshots go too
        shutil.rmtree(train_dir / SNAPSHOTS, ignore_errors=True)
    train_dir.mkdir(parents=True, exist_ok=True)
    # log and snapshots before the state: a copy cut short leaves the older state, which resumes
    # with the log cut back to its own step
    with atomic_path(running_log(train_dir / LOG)) as tmp:
        shutil.copyfile(parked / LOG, tmp)
    for name in stamp["snapshots"]:
        with atomic_path(train_dir / SNAPSHOTS / name) as tmp:
            shutil.copyfile(parked / SNAPSHOTS / name, tmp)
    with atomic_path(train_dir / STATE_FILE) as tmp:
        shutil.copyfile(parked / STATE_FILE, tmp)
    return stamp["step"]
