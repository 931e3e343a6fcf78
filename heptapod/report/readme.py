"""A preset's README: provenance, every family's statement and section, noise, tokenizers,
training curves and samples; and ``results/README.md``, the default's README re-rooted."""

from __future__ import annotations

import os
import re
from pathlib import Path

from heptapod import paper
from heptapod.config import Config
from heptapod.provenance import provenance
from heptapod.report.plots import plot_samples, plot_training
from heptapod.report.runs import METRICS, PER_IMAGE, RunFiles, run_rows
from heptapod.report.statements import convergence_line, noise_section
from heptapod.report.tables import num, tokenizer_table
from heptapod.utils.io import atomic_path, read_json, write_json, write_text


def write_report(preset: str, cfg: Config, files: dict[str, RunFiles], families: list[str | Path],
                 floor_path: str | Path, tokenizers: list[str | Path], recons: list[str | Path],
                 classifier_metrics: str | Path | None, out_dir: str | Path) -> dict:
    """README.md, runs.csv, metrics.json, training curves and samples of the runs of ``files``.
    ``families`` are the families' JSON files (their ``.md`` beside them); ``tokenizers`` the
    tokenizers' metrics, ``recons`` their reconstruction PNGs in the same order."""
    out_dir = Path(out_dir)
    if len(recons) != len(tokenizers):
        raise ValueError(f"{len(recons)} reconstruction images for {len(tokenizers)} tokenizers")
    rows = run_rows(files)
    extractor = rows["extractor"].iloc[0]
    toks = {}
    for metrics, recon in zip(tokenizers, recons):
        tok = read_json(metrics)
        toks[tok["kind"]] = tok
        with atomic_path(out_dir / f"tokenizer_recon_{tok['kind']}.png") as tmp:
            tmp.write_bytes(Path(recon).read_bytes())
    clf = read_json(classifier_metrics) if classifier_metrics else None
    with atomic_path(out_dir / "runs.csv") as tmp:
        rows.drop(columns=PER_IMAGE).to_csv(tmp, index=False)
    fam = [read_json(f) for f in families]
    prov = provenance(preset, cfg.data.dataset, feature_extractor=extractor,
                      classifier_test_accuracy=clf["test_accuracy"] if clf else None)
    write_json(out_dir / "metrics.json", {
        "provenance": prov,
        "runs": {r["run"]: {k: num(r[k]) for k in (*METRICS, "params_M", "train_PFLOP")}
                 for r in rows.to_dict("records")},
        "tokenizers": {k: {m: t[m] for m in ("rfid", "mse", "psnr")} for k, t in toks.items()},
    })
    plot_training(files, f"Training loss, preset '{preset}'", out_dir / "training_curves.png")
    plot_samples({run: f.grid for run, f in files.items()}, out_dir / "samples.png")

    grid = cfg.data.image_size // cfg.tokenizer.downsample
    extractor_line = (f"{extractor}; its test accuracy {clf['test_accuracy']:.4f}" if clf else extractor)
    if clf and clf.get("checkpoint"):  # classifier.checkpoint: the same weights on every machine
        extractor_line += f" (fixed weights `{clf['checkpoint']}`, sha256 {clf['checkpoint_sha256'][:12]})"
    evaluated = ", ".join(f"`{c}`" for c in sorted(set(rows["commit"])))
    machines = "; ".join(sorted(set(rows["machine"])))
    reference = rows["reference"].iloc[0]
    reference = (f"{int(reference)} held-out test images" if reference == reference and reference is not None
                 else f"the reference statistics `{cfg.evaluate.reference_stats}`")
    text = f"""# Results: preset `{preset}`

Written by the pipeline (`snakemake --cores all ablations --config preset={preset}`, or
`dvc repro`); every number below comes from files the pipeline produced. Do not edit by hand.

## Provenance
| key | value |
|---|---|
| preset | `{preset}` |
| commit | `{prov['commit']}` (report); runs evaluated at {evaluated} |
| machine | runs trained on {machines} |
| dataset | {cfg.data.dataset} ({cfg.data.image_size}x{cfg.data.image_size}, {cfg.data.channels} channel(s)) |
| tokenizers | {', '.join(toks)} ({grid}x{grid} grid, N = {grid * grid}) |
| feature extractor | {extractor_line} |
| samples / reference | {int(rows['samples'].iloc[0])} class-balanced samples per run vs {reference} |
| runs | {len(files)} trained runs, {rows['train_min'].sum():.1f} min of training in all (wall time per run in `runs.csv`) |

All FID/IS/KID here are torch-fidelity metrics with the **{extractor}** as feature extractor:
comparable between rows of this report, not with the paper's Inception numbers on ImageNet
256, which stand beside ours in labelled columns ({paper.SOURCE}).

## What agrees with the paper and what does not
{convergence_line(rows)}

""" + "\n".join(f"- {f['statement']}" for f in fam) + "\n\n" + noise_section(
        read_json(floor_path), rows, extractor) + "\n"
    text += "\n".join(Path(f).with_suffix(".md").read_text() for f in families)
    if toks:
        text += "\n## Tokenizers\n" + tokenizer_table(toks) + "\n\n" + "\n".join(
            f"![{k} reconstructions: odd rows test images, even rows reconstructions](tokenizer_recon_{k}.png)"
            for k in toks) + "\n"
    text += f"""
## Training curves
![training curves](training_curves.png)

## Samples (one row per class, first {cfg.sample.grid_rows} classes)
![samples of every run](samples.png)
"""
    write_text(out_dir / "README.md", text)
    return {"report": str(out_dir / "README.md"), "runs": len(files), "families": [f["family"] for f in fam]}


def write_index(report_readme: str | Path, out: str | Path) -> dict:
    """results/README.md: a preset's report README, its links re-rooted at the index's folder."""
    report_readme, out = Path(report_readme), Path(out)
    rel = Path(os.path.relpath(report_readme.parent, out.parent)).as_posix()
    text = report_readme.read_text()
    text = re.sub(r"\]\((?!https?:|/)([^)]+)\)", lambda m: f"]({rel}/{m.group(1)})", text)
    note = (f"_This page is the report of `{rel}` with its links re-rooted; the reports of other "
            f"presets are in `report/<preset>/`, benchmark files in `bench/`._\n\n")
    write_text(out, note + text)
    return {"index": str(out)}
