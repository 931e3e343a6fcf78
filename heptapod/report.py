"""Report stage: the preset's tables (markdown + CSV + JSON), plots and a README to read.

Everything here is read from files the pipeline wrote; the paper's numbers come from
``heptapod.paper`` and are always labelled as the paper's.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from heptapod import paper, paths  # noqa: E402
from heptapod.config import Config, load_config, split_run, tokenizer_kind  # noqa: E402
from heptapod.utils.io import atomic_path, git_commit, load_checkpoint, read_json, write_json, write_text  # noqa: E402
from heptapod.utils.training import read_log  # noqa: E402

PAPER_DEPTH = {0: "31/1", 1: "24/8", 2: "16/16"}  # extreme, 3:1, 1:1 (Table 4, total 32)


# ----------------------------------------------------------------------------- collecting
def run_row(preset: str, run: str) -> dict:
    metrics = read_json(paths.eval_metrics(preset, run))
    ckpt = load_checkpoint(paths.model(preset, run), "generator")
    spec = ckpt["spec"]
    log = read_log(paths.train_log(preset, run))
    variant, seed = split_run(run)
    window = {"global": spec["grid_size"] ** 2, "local": spec["window"], "1d": 1}[spec["head"]]
    return {
        "run": run, "variant": variant, "seed": seed, "head": spec["head"], "order": spec["order"],
        "tokens": spec.get("tokens", "discrete"),
        "window": window, "depth": f"{spec['backbone_depth']}/{spec['head_depth']}",
        "params_M": ckpt["num_params"] / 1e6, "steps": ckpt["steps"],
        "train_PFLOP": ckpt["train_flops"] / 1e15, "train_min": log[-1]["elapsed_s"] / 60,
        "fid": metrics["fid"], "is": metrics["is"], "kid": metrics["kid"],
        "extractor": metrics["extractor"], "samples": metrics["num_fake"], "reference": metrics["num_real"],
        "commit": metrics.get("commit", "unknown"),  # the code that evaluated this run
    }


def aggregate(rows: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """One line per variant: mean and spread (half the min-max range) over its seeds."""
    out = []
    for v in variants:
        g = rows[rows["variant"] == v]
        line = {"variant": v, "head": g["head"].iloc[0], "order": g["order"].iloc[0],
                "tokens": g["tokens"].iloc[0],
                "window": int(g["window"].iloc[0]), "depth": g["depth"].iloc[0],
                "params_M": g["params_M"].iloc[0], "steps": int(g["steps"].iloc[0]),
                "train_PFLOP": g["train_PFLOP"].mean(), "seeds": len(g)}
        for m in ("fid", "is", "kid"):
            line[m] = g[m].mean()
            line[f"{m}_spread"] = (g[m].max() - g[m].min()) / 2 if len(g) > 1 else float("nan")
        out.append(line)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- formatting
def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (float, np.floating)):
        return f"{x:.4g}"
    return str(x)


def _pm(mean: float, spread: float) -> str:
    return _fmt(mean) if math.isnan(spread) else f"{mean:.4g} ± {spread:.2g}"


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def family_table(agg: pd.DataFrame, extractor: str, paper_cols: dict[str, dict] | None) -> pd.DataFrame:
    t = pd.DataFrame({
        "variant": agg["variant"], "head": agg["head"], "order": agg["order"], "w": agg["window"],
        "depth (backbone/head)": agg["depth"], "params (M)": agg["params_M"],
        "train PFLOP": agg["train_PFLOP"], "seeds": agg["seeds"],
        f"FID ({extractor})": [_pm(m, s) for m, s in zip(agg["fid"], agg["fid_spread"])],
        f"IS ({extractor})": [_pm(m, s) for m, s in zip(agg["is"], agg["is_spread"])],
        f"KID ({extractor})": [_pm(m, s) for m, s in zip(agg["kid"], agg["kid_spread"])],
    })
    if paper_cols is not None:
        t["paper FID (ImageNet, Inception)"] = [paper_cols.get(v, {}).get("fid") for v in agg["variant"]]
        t["paper IS (ImageNet, Inception)"] = [paper_cols.get(v, {}).get("is") for v in agg["variant"]]
    return t


def _order_statement(agg: pd.DataFrame, paper_fid: dict[str, float], what: str) -> str:
    ours = list(agg.sort_values("fid")["variant"])
    theirs = sorted(paper_fid, key=paper_fid.get)
    ours_common = [v for v in ours if v in paper_fid]
    verdict = "agrees with" if ours_common == [v for v in theirs if v in ours_common] else "DISAGREES with"
    return (f"{what}: ranking by FID here (best first) is {' < '.join(ours_common)}; paper: "
            f"{' < '.join(v for v in theirs if v in ours_common)}. This run {verdict} the paper's ordering.")


def _trend_statement(agg: pd.DataFrame, key: str, what: str, paper_claim: str) -> str:
    a = agg.sort_values(key)
    fids = list(a["fid"])
    monotone = all(x >= y for x, y in zip(fids, fids[1:]))
    pairs = ", ".join(f"{k}={_fmt(v)}: {_fmt(f)}" for k, v, f in zip([key] * len(a), a[key], fids))
    return (f"{what} (FID by {key}: {pairs}). Paper: {paper_claim}. Here FID "
            f"{'improves monotonically' if monotone else 'does not improve monotonically'} with {key}.")


# ----------------------------------------------------------------------------- plots
def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_training(preset: str, runs: list[str], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        log = pd.DataFrame(read_log(paths.train_log(preset, run)))
        ax.plot(log["step"], log["loss"].rolling(10, min_periods=1).mean(), label=run, lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("token loss on supervised slots (nats, smoothed)")
    ax.set_title(f"Training loss, preset '{preset}'")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    _save(fig, out)


def plot_progress(preset: str, runs: list[str], title: str, extractor: str, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for run in runs:
        prog = pd.DataFrame(read_json(paths.progress(preset, run))["progress"])
        for ax, metric in zip(axes, ("fid", "is")):
            ax.plot(prog["sequences"], prog[metric], marker="o", label=run)
    for ax, name in zip(axes, ("FID", "IS")):
        ax.set_xlabel("training sequences seen")
        ax.set_ylabel(f"{name} ({extractor})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, out)


def plot_samples(preset: str, runs: list[str], out: Path) -> None:
    cols = min(4, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, run in zip(axes.flat, runs):
        with Image.open(paths.sample_grid(preset, run)) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
        ax.set_title(run, fontsize=9)
    _save(fig, out)


# ----------------------------------------------------------------------------- report
def write_report(params_path: str, preset: str, cfg: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    wf = cfg.workflow
    runs = wf.runs()
    rows = pd.DataFrame([run_row(preset, r) for r in runs])
    extractor = rows["extractor"].iloc[0]
    kinds = sorted({tokenizer_kind(load_config(params_path, preset, r)) for r in runs}, reverse=True)
    toks = {k: read_json(paths.tokenizer_metrics(preset, k)) for k in kinds}
    tok = toks["vq"] if "vq" in toks else next(iter(toks.values()))
    clf = read_json(paths.classifier_metrics(preset))
    with atomic_path(out_dir / "runs.csv") as tmp:
        rows.to_csv(tmp, index=False)

    t1 = aggregate(rows, wf.table1)
    depth = aggregate(rows, wf.depth_split)
    token_types = aggregate(rows, wf.token_types)
    window = aggregate(rows, wf.window_sweep)
    density = aggregate(rows, wf.density_sweep)
    density["n"] = [cfg_n(params_path, preset, v) for v in density["variant"]]
    window["n"] = [cfg_n(params_path, preset, v) for v in window["variant"]]
    depth_paper = {v: paper.TABLE4[PAPER_DEPTH[i]] for i, v in enumerate(wf.depth_split) if i in PAPER_DEPTH}
    tables = {
        "table1": family_table(t1, extractor, paper.TABLE1),
        "table4": family_table(depth, extractor, depth_paper),
        "window": family_table(window, extractor, None).assign(n=list(window["n"]),
                                                               **{"w*n": list(window["window"] * window["n"])}),
        "density": family_table(density, extractor, None).assign(n=list(density["n"])),
        "tokens": family_table(token_types, extractor, None).assign(tokens=list(token_types["tokens"])),
    }
    for name, table in tables.items():
        with atomic_path(out_dir / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)

    provenance = {"preset": preset, "commit": git_commit(), "dataset": cfg.data.dataset,
                  "feature_extractor": extractor, "classifier_test_accuracy": clf["test_accuracy"]}
    write_json(out_dir / "metrics.json", {
        "provenance": provenance,
        "runs": {r["run"]: {k: r[k] for k in ("fid", "is", "kid", "params_M", "train_PFLOP")}
                 for r in rows.to_dict("records")},
        "tokenizers": {k: {m: t[m] for m in ("rfid", "mse", "psnr")} for k, t in toks.items()},
    })
    plot_training(preset, runs, out_dir / "training_curves.png")
    plot_progress(preset, wf.window_sweep, "Window size at constant w·n (Fig. 7 analogue)", extractor,
                  out_dir / "fig7_window.png")
    plot_progress(preset, wf.density_sweep, "Supervision density at w = N (Fig. 8 analogue)", extractor,
                  out_dir / "fig8_density.png")
    plot_progress(preset, wf.token_types, "Discrete (VQ) vs continuous (KL) tokens (Fig. 6 analogue)",
                  extractor, out_dir / "fig6_tokens.png")
    plot_samples(preset, runs, out_dir / "samples.png")

    grid = cfg.data.image_size // cfg.tokenizer.downsample
    seeds_note = f"{wf.seeds} seeds (mean ± half the min–max range)" if wf.seeds > 1 else "1 seed"
    statements = [
        _order_statement(t1, {k: v["fid"] for k, v in paper.TABLE1.items()}, "Table 1"),
        _order_statement(depth, {v: p["fid"] for v, p in depth_paper.items()}, "Table 4"),
        _trend_statement(density, "n", "Fig. 8", "FID and IS improve with n"),
        _window_statement(window),
        _tokens_statement(preset, wf.token_types),
    ]
    total_min = rows["train_min"].sum()
    text = f"""# Results: preset `{preset}`

Written by the pipeline (`snakemake --cores all ablations --config preset={preset}`, or
`dvc repro`); every number below comes from files the pipeline produced. Do not edit by hand.

## Provenance
| key | value |
|---|---|
| preset | `{preset}` |
| commit | `{provenance['commit']}` (report); runs evaluated at {', '.join(f'`{c}`' for c in sorted(set(rows['commit'])))} |
| dataset | {cfg.data.dataset} ({cfg.data.image_size}x{cfg.data.image_size}, {cfg.data.channels} channel(s)) |
| tokenizers | {', '.join(kinds)} ({grid}x{grid} grid, N = {grid * grid}) |
| feature extractor | {extractor}; its test accuracy {clf['test_accuracy']:.4f} |
| samples / reference | {int(rows['samples'].iloc[0])} class-balanced samples per run vs {int(rows['reference'].iloc[0])} held-out test images |
| runs | {len(runs)} trained runs, {total_min:.1f} min of training in all (wall time per run in `runs.csv`) |

All FID/IS/KID here are torch-fidelity metrics with the **{extractor}** as feature extractor:
comparable between rows of this report, not with the paper's Inception numbers on ImageNet
256, which stand beside ours in labelled columns ({paper.SOURCE}).

## What agrees with the paper and what does not
""" + "\n".join(f"- {s}" for s in statements) + f"""

## Table 1 analogue: sampler and order ({seeds_note})
{markdown(tables['table1'])}

## Table 4 analogue: backbone / head depth split (total depth fixed)
{markdown(tables['table4'])}

Paper columns: Heptapod-L w256n1 with depth 31/1, 24/8, 16/16 (total 32), matched by position
(extreme, 3:1, 1:1).

## Fig. 7 analogue: window size w at constant w·n
{markdown(tables['window'])}

![window sweep](fig7_window.png)

## Fig. 8 analogue: supervision density n at w = N
{markdown(tables['density'])}

![density sweep](fig8_density.png)

## Fig. 6 analogue: discrete vs continuous tokens (same model size)
{markdown(tables['tokens'])}

![VQ vs KL](fig6_tokens.png)

## Tokenizers
{tokenizer_table(toks)}

""" + "\n".join(f"![{k} reconstructions: odd rows test images, even rows reconstructions](tokenizer_recon_{k}.png)"
               for k in kinds) + f"""

## Training curves
![training curves](training_curves.png)

## Samples (one row per class, first {cfg.sample.grid_rows} classes)
![samples of every run](samples.png)
"""
    for k in kinds:
        with atomic_path(out_dir / f"tokenizer_recon_{k}.png") as tmp:
            tmp.write_bytes(paths.tokenizer_recon(preset, k).read_bytes())
    write_text(out_dir / "README.md", text)
    return {"report": str(out_dir / "README.md"), "runs": len(runs)}


def tokenizer_table(toks: dict[str, dict]) -> str:
    lines = ["| tokenizer | rFID | MSE | PSNR (dB) | codes used | code perplexity | latent scale |",
             "|---|---|---|---|---|---|---|"]
    for k, t in toks.items():
        used = f"{t['codebook_used']} / {t['codebook_size']}" if "codebook_used" in t else "–"
        lines.append(f"| {k} | {t['rfid']:.4g} ({t['extractor']}) | {t['mse']:.4g} | {t['psnr']:.2f} | {used} | "
                     f"{_fmt(t.get('codebook_perplexity'))} | {_fmt(t.get('latent_scale'))} |")
    return "\n".join(lines)


def _tokens_statement(preset: str, runs: list[str]) -> str:
    if len(runs) < 2:
        return "Fig. 6: not enough token types to compare."
    prog = {r: pd.DataFrame(read_json(paths.progress(preset, r))["progress"]) for r in runs}
    first = {r: p["fid"].iloc[0] for r, p in prog.items()}
    last = {r: p["fid"].iloc[-1] for r, p in prog.items()}
    early, late = min(first, key=first.get), min(last, key=last.get)
    return (f"Fig. 6: best FID at the first snapshot: {early}; at the end: {late}. Paper: VQ converges "
            f"faster early, the VAE ends better (after ~150 epochs at ImageNet scale).")


def _window_statement(window: pd.DataFrame) -> str:
    base = window[window["n"] == 1]
    rest = window[window["n"] > 1]
    if base.empty or rest.empty:
        return "Fig. 7: not enough window variants to compare."
    best_local = rest.sort_values("fid").iloc[0]
    wins = base["fid"].iloc[0] < best_local["fid"]
    return (f"Fig. 7: w = N (n = 1) FID {_fmt(base['fid'].iloc[0])} vs best local window "
            f"{best_local['variant']} FID {_fmt(best_local['fid'])}. Paper: the larger window wins at "
            f"equal w·n. Here it {'does' if wins else 'does NOT'}.")


def cfg_n(params_path: str, preset: str, variant: str) -> int:
    from heptapod.config import load_config

    return load_config(params_path, preset, variant).train.supervision_density


def write_index(report_readme: str | Path, out: str | Path) -> dict:
    """results/README.md: the default preset's report, its links re-rooted at results/."""
    import os
    import re

    report_readme, out = Path(report_readme), Path(out)
    rel = Path(os.path.relpath(report_readme.parent, out.parent)).as_posix()
    text = report_readme.read_text()
    text = re.sub(r"\]\((?!https?:|/)([^)]+)\)", lambda m: f"]({rel}/{m.group(1)})", text)
    note = (f"_This page is the report of `{rel}` with its links re-rooted; the reports of other "
            f"presets are in `report/<preset>/`, benchmark files in `bench/`._\n\n")
    write_text(out, note + text)
    return {"index": str(out)}
