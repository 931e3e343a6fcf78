"""The report's figures: training curves, FID against training and compute, bars, samples."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from heptapod.config import split_run  # noqa: E402
from heptapod.report.runs import RunFiles  # noqa: E402
from heptapod.utils.io import atomic_path, read_json  # noqa: E402
from heptapod.utils.training import read_log  # noqa: E402

VAL_KEYS = ("val_nll_bits", "val_diffusion_loss")


def save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_training(files: dict[str, RunFiles], title: str, out: Path,
                  ends: list[tuple[str, list[float], list[float]]] | None = None) -> None:
    """Training loss (left) and the held-out validation score at the snapshots (right); with
    ``ends`` (label, training PFLOP, final held-out NLL per point) a third panel of those."""
    fig, axes = plt.subplots(1, 3 if ends else 2, figsize=(19.5 if ends else 13, 4.5))
    ax, axv = axes[:2]
    for run, f in files.items():
        log = pd.DataFrame(read_log(f.log))
        train = log[log["loss"].notna()] if "loss" in log else log.iloc[:0]
        line, = ax.plot(train["step"], train["loss"].rolling(10, min_periods=1).mean(), label=run, lw=1)
        for key, style in zip(VAL_KEYS, ("-o", "--s")):
            if key in log and log[key].notna().any():
                val = log[log[key].notna()]
                axv.plot(val["step"], val[key], style, color=line.get_color(), label=run, ms=3, lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("token loss on supervised slots (smoothed)")
    ax.set_title(title)
    axv.set_xlabel("training step")
    axv.set_ylabel("held-out: NLL bits/token (o) or diffusion loss (s), EMA")
    axv.set_title("Validation at the snapshots")
    if ends:
        for label, x, y in ends:
            axes[2].plot(x, y, "-o", label=label, ms=4)
        axes[2].set_xscale("log")
        axes[2].set_xlabel("training PFLOP (log)")
        axes[2].set_ylabel("held-out NLL bits/token, final weights")
        axes[2].set_title("At equal compute: more steps or denser supervision")
    for a in axes:
        a.legend(fontsize=6, ncol=2)
        a.grid(alpha=0.3)
    save(fig, out)


def plot_progress(rows: pd.DataFrame, files: dict[str, RunFiles], title: str, extractor: str, out: Path) -> None:
    """FID of a family's EMA snapshots vs training sequences and vs training compute, and the
    held-out score vs compute: variants that differ in cost per step compare at equal FLOPs."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    step_pflop = dict(zip(rows["run"], rows["step_PFLOP"]))
    colors = variant_colors(files)
    for run, f in files.items():
        variant, seed = split_run(run)
        # one colour per variant, its seeds in that colour and named once: a family reads as
        # variants with their seed spread, not as as many unrelated lines as there are runs
        style = {"color": colors[variant], "marker": "o", "ms": 4, "lw": 1.2 if seed == 0 else 0.8,
                 "alpha": 1.0 if seed == 0 else 0.6, "label": variant if seed == 0 else None}
        prog = pd.DataFrame(read_json(f.progress)["progress"])
        axes[0].plot(prog["sequences"], prog["fid"], **style)
        axes[1].plot(prog["step"] * step_pflop[run], prog["fid"], **style)
        log = pd.DataFrame(read_log(f.log))
        key = next((k for k in VAL_KEYS if k in log), None)
        if key is not None:
            val = log[log[key].notna()]
            axes[2].plot(val["step"] * step_pflop[run], val[key], **style)
    labels = [("training sequences seen", f"FID ({extractor})"), ("training PFLOP", f"FID ({extractor})"),
              ("training PFLOP", "held-out NLL bits/token (diffusion loss for KL)")]
    for ax, (x, y) in zip(axes, labels):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[0].xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())  # 50k, not 50000 (labels overlap)
    several = any(split_run(run)[1] for run in files)
    axes[0].legend(fontsize=8, title="faint: further seeds" if several else None, title_fontsize=7)
    fig.suptitle(title)
    save(fig, out)


def variant_colors(runs) -> dict[str, str]:
    """A colour of matplotlib's default cycle for each variant among ``runs`` (names such as
    '2d-random@1'), in order of first appearance."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    variants = list(dict.fromkeys(split_run(run)[0] for run in runs))
    return {v: cycle[i % len(cycle)] for i, v in enumerate(variants)}


def plot_bars(agg: pd.DataFrame, title: str, extractor: str, out: Path) -> None:
    """FID, IS and held-out NLL per variant (error bars: SD over seeds, where there are several)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    x = np.arange(len(agg))
    for ax, metric, name in zip(axes, ("fid", "is", "nll"), (f"FID ({extractor})", f"IS ({extractor})",
                                                            "NLL (bits/token, test)")):
        sd = agg[f"{metric}_sd"].fillna(0)
        ax.bar(x, agg[metric].fillna(0), yerr=sd, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(x, agg["variant"], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    save(fig, out)


def plot_samples(grids: dict[str, Path], out: Path) -> None:
    """Each run's sample grid, titled with the run."""
    cols = min(4, len(grids))
    rows = math.ceil(len(grids) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (run, grid) in zip(axes.flat, grids.items()):
        with Image.open(grid) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
        ax.set_title(run, fontsize=9)
    save(fig, out)
