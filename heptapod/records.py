"""A finished run's record: the few small files a report reads about it, kept in the repository.

A report needs of a run its scores, held-out likelihood, training log, sample grid and FID-vs-
training points, and of its checkpoint only a summary (spec, size, steps, FLOPs, machine). With
``workflow.records`` on, a run whose record matches its parameters stands in for training,
sampling and scoring it: pages can then be assembled from runs trained in other sessions and on
other machines, each named with its own commit and machine; the doubling chain and the NLL by
generation step read records too. Analyses that look inside a model (attention, similarity,
probes) still need its checkpoint and train it where absent.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

from heptapod import paths
from heptapod.config import Config, ConfigError, fingerprint, training_fingerprint
from heptapod.provenance import provenance
from heptapod.utils.io import atomic_dir, load_checkpoint, read_json, write_json

# What a run's record holds, by the name a report gives it (heptapod.report.runs.RunFiles).
RECORD_FILES = {"metrics": "metrics.json", "likelihood": "likelihood.json", "model": "model.json",
                "log": "log.jsonl", "progress": "progress.json", "grid": "grid.png"}
STAMP = "record.json"  # written last: a record without it is incomplete and never read
# The configuration a run's scores depend on; another value in any of these makes a record stale.
RUN_SECTIONS = ("data", "tokenizer", "latents", "classifier", "model", "train", "sample", "evaluate")
SUMMARY_KIND = "generator-summary"
SUMMARY_KEYS = ("spec", "steps", "num_params", "step_flops", "train_flops", "machine", "tokenizer_sha256")
# Provenance fields that say only when and at which commit a file was written: a run scored again
# with the same numbers is the same run, and recording it again would only churn the repository.
WHEN_WRITTEN = ("commit", "created")


def run_fingerprint(cfg: Config) -> str:
    return fingerprint(cfg, *RUN_SECTIONS)


def model_summary(path: str | Path) -> dict:
    """What a report reads of a generator checkpoint, from the checkpoint or a record's summary."""
    path = Path(path)
    if path.suffix == ".json":
        summary = read_json(path)
        if not isinstance(summary, dict) or summary.get("kind") != SUMMARY_KIND:
            raise ConfigError(f"{path}: not a generator summary (kind '{SUMMARY_KIND}')")
        return summary
    ckpt = load_checkpoint(path, "generator")
    return {"kind": SUMMARY_KIND, **{k: ckpt[k] for k in SUMMARY_KEYS if k in ckpt}}


def pipeline_files(cfg: Config, preset: str, run: str, all_kinds: bool = False) -> dict[str, Path]:
    """Where the pipeline writes what a record keeps: progress only for the preset's runs with FID
    curves (``cfg``: the preset's configuration), unless ``all_kinds``."""
    files = {"metrics": paths.eval_metrics.of(preset, run), "likelihood": paths.likelihood.of(preset, run),
             "model": paths.model.of(preset, run), "log": paths.train_log.of(preset, run),
             "grid": paths.sample_grid.of(preset, run)}
    if all_kinds or run in cfg.workflow.progress_runs():
        files["progress"] = paths.progress.of(preset, run)
    return files


def missing_files(cfg: Config, preset: str, run: str) -> list[Path]:
    """The files a record of the run needs that the pipeline has not written (yet)."""
    return [p for p in pipeline_files(cfg, preset, run).values() if not p.is_file()]


def stale_scores(cfg: Config, preset: str, run: str) -> list[Path]:
    """The run's scores (samples, FID, likelihood) written before its present model: left from an
    earlier training of the run, their new versions not written yet (a run redone by the workflow
    is retrained before it is scored again)."""
    files = pipeline_files(cfg, preset, run)
    trained = files["model"].stat().st_mtime_ns
    return [p for k, p in files.items() if k not in ("model", "log") and p.stat().st_mtime_ns < trained]


def write_record(cfg: Config, preset: str, run: str, out: str | Path) -> dict:
    """Copy a scored run's files into the record folder ``out``, replacing it whole (a killed
    write leaves the old record or none); every file must exist."""
    if missing := missing_files(cfg, preset, run):
        raise FileNotFoundError(f"run '{run}' of preset '{preset}' is not scored yet: missing "
                                f"{', '.join(map(str, missing))}")
    if stale := stale_scores(cfg, preset, run):
        raise ConfigError(f"run '{run}' of preset '{preset}' is not scored since it was last trained: "
                          f"{', '.join(map(str, stale))} older than {paths.model.of(preset, run)}")
    source = pipeline_files(cfg, preset, run)
    summary = model_summary(source["model"])
    trained_with = source["model"].with_name(paths.STATE_FILE)  # the training state, stamped with its params
    if trained_with.is_file() and "tokenizer_sha256" in summary:
        stamp = load_checkpoint(trained_with, paths.STATE_KIND).get("fingerprint")
        if stamp != training_fingerprint(cfg, summary["tokenizer_sha256"]):
            raise ConfigError(f"run '{run}' of preset '{preset}' was trained with other model or train "
                              f"parameters than the present ones ({trained_with}); rerun it before recording it")
    with atomic_dir(out) as tmp:
        for key, path in source.items():
            if key != "model":
                shutil.copyfile(path, tmp / RECORD_FILES[key])
        write_json(tmp / RECORD_FILES["model"], summary)
        stamp = {"run": run, "files": sorted(RECORD_FILES[k] for k in source),
                 "fingerprint": run_fingerprint(cfg), "provenance": provenance(preset, cfg.data.dataset, run)}
        write_json(tmp / STAMP, stamp)
    return stamp


def _same_content(a: Path, b: Path) -> bool:
    """Byte-equal files, or JSON files equal but for when and at which commit they were written."""
    if filecmp.cmp(a, b, shallow=False):
        return True
    if a.suffix != ".json":
        return False

    def content(path: Path) -> str:
        data = read_json(path)
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in WHEN_WRITTEN}
            if isinstance(data.get("provenance"), dict):
                data["provenance"] = {k: v for k, v in data["provenance"].items() if k not in WHEN_WRITTEN}
        return json.dumps(data, sort_keys=True)  # as text: a NaN score equals itself
    return content(a) == content(b)


def up_to_date(cfg: Config, preset: str, run: str, folder: str | Path) -> bool:
    """Whether the folder already holds this run's record: matching its parameters, with the same
    scores and log as the pipeline's files, whenever and at whichever commit they were written."""
    files = matching_record(cfg, folder)
    source = pipeline_files(cfg, preset, run)
    return bool(files) and all(files.get(k) and _same_content(files[k], source[k])
                               for k in ("metrics", "likelihood", "log") if source[k].is_file())


def read_stamp_file(path: str | Path, what: str, fields: dict[str, type]) -> dict | None:
    """A folder's stamp (written last: a folder without one is incomplete), None where absent; one
    without each of ``fields`` of its type is an error naming the file and ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        return None
    stamp = read_json(path)
    if not isinstance(stamp, dict) or not all(isinstance(stamp.get(k), t) for k, t in fields.items()):
        names = [f"'{k}'" for k in fields]
        raise ConfigError(f"{path}: not {what} (needs {', '.join(names[:-1])} and {names[-1]})")
    return stamp


def read_stamp(folder: str | Path) -> dict | None:
    """A record's stamp, None where the folder holds no complete record; a corrupt one is an error."""
    return read_stamp_file(Path(folder) / STAMP, "a run record", {"fingerprint": str, "files": list})


def matching_record(cfg: Config, folder: str | Path) -> dict[str, Path] | None:
    """The record's files by kind where it was written under the run's present parameters and holds
    every file it lists; None where there is none or it is stale."""
    stamp = read_stamp(folder)
    if stamp is None or stamp["fingerprint"] != run_fingerprint(cfg):
        return None
    files = {k: Path(folder) / name for k, name in RECORD_FILES.items() if name in stamp["files"]}
    if missing := [str(p) for p in files.values() if not p.is_file()]:
        raise ConfigError(f"run record {folder} lists files it lacks: {', '.join(missing)}")
    return files
