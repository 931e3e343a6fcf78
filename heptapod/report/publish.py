"""Copy a finished report (or one family of it) to the folder DVC owns: DVC never claims
Snakemake's outputs, and `dvc metrics show` reads one small scores file per run."""

from __future__ import annotations

from pathlib import Path

from heptapod.config import FAMILIES
from heptapod.utils.io import atomic_path, read_json, write_json

# the headline scores, one row per run that fits a terminal; precision and recall stay in the reports
SCORES = ("fid", "is", "kid", "nll", "dloss")


def publish(src: str | Path, dst: str | Path, family: str | None = None) -> dict:
    """A family's files (``family``), or the README and what it shows besides the families plus
    ``scores/<run>.json`` (each DVC output belongs to exactly one stage)."""
    src, dst = Path(src), Path(dst)
    stem = family or "metrics"
    if not (src / f"{stem}.json").is_file():
        raise FileNotFoundError(f"no finished report in {src} (missing {stem}.json)")
    files = sorted(p for p in src.iterdir() if p.is_file() and (
        p.stem == family if family else p.stem not in FAMILIES))
    for file in files:
        with atomic_path(dst / file.name) as tmp:
            tmp.write_bytes(file.read_bytes())
    if family:
        return {"published": [f.name for f in files], "to": str(dst)}
    # one row per run with a column per score in `dvc metrics show` / `dvc metrics diff`
    runs = read_json(src / "metrics.json")["runs"]
    for run, row in runs.items():
        write_json(dst / "scores" / f"{run}.json", {k: row[k] for k in SCORES if row.get(k) is not None})
    return {"published": [f.name for f in files], "scores": sorted(runs), "to": str(dst)}
