"""Report stage: one table, plot and statement per ablation family, and a README to read.

Each family (paper Table 1, 2, 4 and Fig. 6, 7, 8; ``heptapod.config.FAMILIES``) is written on
its own (``results/report/<preset>/<family>.{md,csv,json,png}``), so a single paper table can
be reproduced and published alone; the README gathers them. Everything here is read from files
the pipeline wrote; the paper's numbers come from ``heptapod.paper``, always labelled as such.
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

from heptapod import paper, paths, verdicts  # noqa: E402
from heptapod.config import CURVE_FAMILIES, FAMILIES, Config, load_params, resolve, split_run, tokenizer_kind  # noqa: E402
from heptapod.utils.io import atomic_path, git_commit, load_checkpoint, read_json, write_json, write_text  # noqa: E402
from heptapod.utils.training import read_log  # noqa: E402

TITLES = {
    "table1": "Table 1 analogue: sampler and order",
    "table2": "Table 2 analogue: the headline model",
    "table4": "Table 4 analogue: backbone / head depth split (total depth fixed)",
    "fig6": "Fig. 6 analogue: discrete (VQ) vs continuous (KL) tokens, same model size",
    "fig7": "Fig. 7 analogue: window size w at constant w·n",
    "fig8": "Fig. 8 analogue: supervision density n at w = N",
}


# ----------------------------------------------------------------------------- collecting
def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def run_row(preset: str, run: str) -> dict:
    metrics = read_json(paths.eval_metrics.of(preset, run))
    lik = read_json(paths.likelihood.of(preset, run))
    ckpt = load_checkpoint(paths.model.of(preset, run), "generator")
    spec = ckpt["spec"]
    log = read_log(paths.train_log.of(preset, run))
    val = [r for r in log if "val_nll_bits" in r or "val_diffusion_loss" in r]
    variant, seed = split_run(run)
    window = {"global": spec["grid_size"] ** 2, "local": spec["window"], "1d": 1}[spec["head"]]
    return {
        "run": run, "variant": variant, "seed": seed, "head": spec["head"], "order": spec["order"],
        "tokens": spec.get("tokens", "discrete"), "window": window,
        "backbone_depth": spec["backbone_depth"], "head_depth": spec["head_depth"],
        "depth": f"{spec['backbone_depth']}/{spec['head_depth']}",
        "params_M": ckpt["num_params"] / 1e6, "steps": ckpt["steps"],
        "train_PFLOP": ckpt["train_flops"] / 1e15, "train_min": log[-1]["elapsed_s"] / 60,
        "fid": metrics["fid"], "is": metrics["is"], "kid": metrics["kid"],
        "nll": _nan(lik.get("nll_bits_per_token")), "nll_se": _nan(lik.get("nll_bits_per_token_se")),
        "nll_order_sd": _nan(lik.get("nll_bits_per_token_order_sd")),
        "dloss": _nan(lik.get("val_diffusion_loss")), "heldout_images": lik["heldout_images"],
        "val_change_last_quarter": last_quarter_change(val, ckpt["steps"]), "extractor": metrics["extractor"], "samples": metrics["num_fake"], "reference": metrics["num_real"],
        "commit": metrics.get("commit", "unknown"),  # the code that evaluated this run
    }


METRICS = ("fid", "is", "kid", "nll", "dloss")


MOVING = 0.01  # a run whose validation score moved more than this over its last quarter is still training


def last_quarter_change(val: list[dict], steps: int) -> float:
    """Relative change of the held-out score from the last validation point at or before 3/4 of
    training to the end (positive: still improving); NaN without two such points."""
    key = "val_nll_bits" if val and "val_nll_bits" in val[0] else "val_diffusion_loss"
    early = [r for r in val if r["step"] <= 0.75 * steps]
    if not early or val[-1]["step"] != steps or early[-1]["step"] == steps:
        return float("nan")
    return (early[-1][key] - val[-1][key]) / abs(val[-1][key])


def convergence_line(rows: pd.DataFrame) -> str:
    """Where the runs stand: how many are still moving by the last-quarter rule."""
    change = rows["val_change_last_quarter"]
    known = change.notna()
    moving = rows.loc[known & (change.abs() > MOVING), "run"].tolist()
    if not known.any():
        return "Convergence: no validation curve to judge it by."
    state = (f"**{len(moving)} of {int(known.sum())} runs are still moving** (held-out score changed "
             f"more than {MOVING:.0%} over the last quarter of training: {', '.join(moving)}); their "
             "ranking may still change with more training." if moving else
             f"All {int(known.sum())} runs have stopped moving (held-out score changed less than "
             f"{MOVING:.0%} over the last quarter of training).")
    return (f"Convergence: {state} Largest change: {change[known].abs().max():.1%}; per run in "
            "`runs.csv` (`val_change_last_quarter`).")


def aggregate(rows: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """One line per variant: mean and standard deviation over its seeds (NaN for one seed)."""
    out = []
    for v in variants:
        g = rows[rows["variant"] == v]
        first = g.iloc[0]
        line = {k: first[k] for k in ("head", "order", "tokens", "depth", "backbone_depth", "head_depth")}
        line.update(variant=v, window=int(first["window"]), params_M=first["params_M"],
                    steps=int(first["steps"]), train_PFLOP=g["train_PFLOP"].mean(), seeds=len(g))
        for m in METRICS:
            line[m] = g[m].mean()
            line[f"{m}_sd"] = g[m].std(ddof=1) if len(g) > 1 else float("nan")
        line["nll_se"] = float(np.sqrt((g["nll_se"] ** 2).mean() / len(g)))  # of the seed mean
        line["nll_order_sd"] = g["nll_order_sd"].mean()
        out.append(line)
    return pd.DataFrame(out)


def paper_rows(family: str, preset: str, agg: pd.DataFrame) -> list[dict | None]:
    """The paper's numbers beside each variant, matched by what the run is (None: no counterpart)."""
    if family == "table1":
        return [paper.TABLE1.get(paper.table1_key(h, o)) for h, o in zip(agg["head"], agg["order"])]
    if family == "table4":
        return [paper.TABLE4.get(paper.table4_key(b, h)) for b, h in zip(agg["backbone_depth"], agg["head_depth"])]
    if family == "table2":
        key = paper.table2_key(preset)
        return [paper.TABLE2[key] if key else None] * len(agg)
    return [None] * len(agg)


# ----------------------------------------------------------------------------- formatting
def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (float, np.floating)):
        return f"{x:.4g}"
    return str(x)


def _pm(mean: float, sd: float) -> str:
    return _fmt(mean) if math.isnan(sd) else f"{mean:.4g} ± {sd:.2g}"


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def family_table(agg: pd.DataFrame, extractor: str, paper_cols: list[dict | None]) -> pd.DataFrame:
    t = pd.DataFrame({
        "variant": agg["variant"], "head": agg["head"], "order": agg["order"], "tokens": agg["tokens"],
        "w": agg["window"], "depth (backbone/head)": agg["depth"], "params (M)": agg["params_M"],
        "train PFLOP": agg["train_PFLOP"], "seeds": agg["seeds"],
        f"FID ({extractor})": [_pm(m, s) for m, s in zip(agg["fid"], agg["fid_sd"])],
        f"IS ({extractor})": [_pm(m, s) for m, s in zip(agg["is"], agg["is_sd"])],
        f"KID ({extractor})": [_pm(m, s) for m, s in zip(agg["kid"], agg["kid_sd"])],
        "NLL (bits/token, test)": [_pm(m, s) for m, s in zip(agg["nll"], agg["nll_sd"])],
        "NLL SD over orders": list(agg["nll_order_sd"]),
    })
    if agg["dloss"].notna().any():  # not a likelihood: its own column
        t["val diffusion loss (not NLL)"] = [_pm(m, s) for m, s in zip(agg["dloss"], agg["dloss_sd"])]
    if any(paper_cols):
        t["paper FID (ImageNet, Inception)"] = [p["fid"] if p else None for p in paper_cols]
        t["paper IS (ImageNet, Inception)"] = [p["is"] if p else None for p in paper_cols]
    return t


# ----------------------------------------------------------------------------- statements
def family_noise(rows: pd.DataFrame, seed_rows: pd.DataFrame | None, floor: dict | None,
                 samples: int) -> tuple[dict[str, verdicts.Noise], str]:
    """The noise of each metric for one family: seed SD pooled over the family's own seed
    replicates (else over ``seed_rows``, Table 1's), floor SD at the runs' sample count; and
    where the seed SD came from."""
    own = verdicts.seed_noise(rows, METRICS)
    other = verdicts.seed_noise(seed_rows, METRICS) if seed_rows is not None else {}
    at = (floor or {}).get("by_count", {}).get(str(samples), {})
    source = ("its own seed replicates" if own["fid"] is not None else
              "Table 1's seed replicates" if seed_rows is not None else "no seed replicates (seed noise unmeasured)")
    return {m: verdicts.Noise(own[m] if own[m] is not None else other.get(m), at.get(f"{m}_sd"))
            for m in METRICS}, source


def _judge(agg: pd.DataFrame, better: str, worse: str, metric: str, noise: dict) -> tuple[str, str]:
    """Verdict of 'better beats worse' on one metric, and a short account of the numbers."""
    a, b = (agg.set_index("variant").loc[v] for v in (better, worse))
    extra = math.sqrt(a["nll_se"] ** 2 + b["nll_se"] ** 2) if metric == "nll" else 0.0
    thr = noise[metric].threshold(extra if extra == extra else 0.0)
    verdict = verdicts.compare(a[metric], b[metric], metric, thr)
    return verdict, f"{better} {_fmt(a[metric])} vs {worse} {_fmt(b[metric])} (threshold {_fmt(thr)}): {verdict}"


def _judged_lines(agg: pd.DataFrame, pairs: list[tuple[str, str]], noise: dict) -> tuple[list[str], dict]:
    """One line per score (FID, held-out NLL) judging every (better, worse) pair, and the
    combined verdict per score; a score that a compared variant lacks is left out."""
    compared = agg.set_index("variant").loc[list(dict.fromkeys(v for pair in pairs for v in pair))]
    lines, out = [], {}
    for metric, name in (("fid", "FID"), ("nll", "held-out NLL")):
        if compared[metric].isna().any():
            continue
        results = [_judge(agg, a, b, metric, noise) for a, b in pairs]
        out[metric] = verdicts.combine([v for v, _ in results])
        lines.append(f"By {name}: **{out[metric]}** ({'; '.join(t for _, t in results)}).")
    return lines, out


def _order_statement(agg: pd.DataFrame, paper_cols: list[dict | None], what: str,
                     noise: dict) -> tuple[str, dict]:
    matched = [(v, p["fid"]) for v, p in zip(agg["variant"], paper_cols) if p]
    if len(matched) < 2:
        return f"{what}: fewer than two variants with a paper counterpart; nothing to rank.", {}
    theirs = [v for v, _ in sorted(matched, key=lambda m: m[1])]
    lines, out = _judged_lines(agg, list(zip(theirs, theirs[1:])), noise)
    return " ".join([f"{what}: the paper's order (FID, best first) is {' < '.join(theirs)}.", *lines]), out


def _density_statement(agg: pd.DataFrame, noise: dict) -> tuple[str, dict]:
    a = agg.sort_values("n")
    lo, hi = a.iloc[0]["variant"], a.iloc[-1]["variant"]
    lines, out = _judged_lines(agg, [(hi, lo)], noise)
    by_n = "FID by n: " + ", ".join(f"n={int(n)}: {_fmt(f)}" for n, f in zip(a["n"], a["fid"])) + "."
    return " ".join([f"Fig. 8 (paper: {paper.CLAIMS['fig8']}): n = {int(a.iloc[0]['n'])} vs "
                     f"n = {int(a.iloc[-1]['n'])}.", *lines, by_n]), out


def _window_statement(agg: pd.DataFrame, noise: dict) -> tuple[str, dict]:
    base, rest = agg[agg["n"] == 1], agg[agg["n"] > 1]
    if base.empty or rest.empty:
        return "Fig. 7: not enough window variants to compare.", {}
    g = base.iloc[0]["variant"]
    lines, out = _judged_lines(agg, [(g, v) for v in rest["variant"]], noise)
    return " ".join([f"Fig. 7 (paper: {paper.CLAIMS['fig7']}): w = N (n = 1) against each local window.",
                     *lines]), out


def _tokens_statement(preset: str, runs: list[str], agg: pd.DataFrame, floor: dict | None,
                      noise: dict, progress_samples: int) -> tuple[str, dict]:
    """Paper: VQ converges faster early, the VAE ends better. Judged at the first snapshot (with
    the floor at the snapshots' sample count) and at the end (with the family's FID noise)."""
    if len(runs) < 2:
        return "Fig. 6: not enough token types to compare.", {}
    kinds = dict(zip(agg["tokens"], agg["variant"]))
    if set(kinds) != {"discrete", "continuous"}:
        return "Fig. 6: needs one discrete and one continuous run.", {}
    vq, kl = kinds["discrete"], kinds["continuous"]
    prog = {r: pd.DataFrame(read_json(paths.progress.of(preset, r))["progress"]) for r in (vq, kl)}
    early_floor = (floor or {}).get("by_count", {}).get(str(progress_samples), {}).get("fid_sd")
    early_thr = verdicts.Noise(noise["fid"].seed_sd, early_floor).threshold()
    first = {r: float(p["fid"].iloc[0]) for r, p in prog.items()}
    early = verdicts.compare(first[vq], first[kl], "fid", early_thr)
    late, late_text = _judge(agg, kl, vq, "fid", noise)
    text = (f"Fig. 6 (paper: {paper.CLAIMS['fig6']}). Early (first snapshot, step "
            f"{int(prog[vq]['step'].iloc[0])}): VQ faster by FID: **{early}** ({vq} {_fmt(first[vq])} vs "
            f"{kl} {_fmt(first[kl])}, threshold {_fmt(early_thr)}). End: VAE better by FID: **{late}** "
            f"({late_text}).")
    return text, {"fid_early": early, "fid_end": late}


def _table2_statement(preset: str, agg: pd.DataFrame, paper_cols: list[dict | None]) -> tuple[str, dict]:
    ours = ", ".join(f"{v}: FID {_fmt(f)}, IS {_fmt(i)}, NLL {_fmt(n)}"
                     for v, f, i, n in zip(agg["variant"], agg["fid"], agg["is"], agg["nll"]))
    if paper_cols and paper_cols[0]:
        return (f"Table 2: {ours}; paper {paper.table2_key(preset)}: FID {paper_cols[0]['fid']}, "
                f"IS {paper_cols[0]['is']}."), {}
    return (f"Table 2: {ours}; the paper's ImageNet numbers are listed below for reference, not for "
            "comparison."), {}


# ----------------------------------------------------------------------------- plots
def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_training(preset: str, runs: list[str], out: Path) -> None:
    """Training loss (left) and the held-out validation score at the snapshots (right)."""
    fig, (ax, axv) = plt.subplots(1, 2, figsize=(13, 4.5))
    for run in runs:
        log = pd.DataFrame(read_log(paths.train_log.of(preset, run)))
        train = log[log["loss"].notna()] if "loss" in log else log.iloc[:0]
        line, = ax.plot(train["step"], train["loss"].rolling(10, min_periods=1).mean(), label=run, lw=1)
        for key, style in (("val_nll_bits", "-o"), ("val_diffusion_loss", "--s")):
            if key in log and log[key].notna().any():
                val = log[log[key].notna()]
                axv.plot(val["step"], val[key], style, color=line.get_color(), label=run, ms=3, lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("token loss on supervised slots (smoothed)")
    ax.set_title(f"Training loss, preset '{preset}'")
    axv.set_xlabel("training step")
    axv.set_ylabel("held-out: NLL bits/token (o) or diffusion loss (s), EMA")
    axv.set_title("Validation at the snapshots")
    for a in (ax, axv):
        a.legend(fontsize=6, ncol=2)
        a.grid(alpha=0.3)
    _save(fig, out)


def plot_progress(preset: str, runs: list[str], title: str, extractor: str, out: Path) -> None:
    """FID of a family's EMA snapshots vs training sequences and vs training compute, and the
    held-out score vs compute: variants that differ in cost per step compare at equal FLOPs."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for run in runs:
        prog = pd.DataFrame(read_json(paths.progress.of(preset, run))["progress"])
        step_pflop = load_checkpoint(paths.model.of(preset, run), "generator")["step_flops"] / 1e15
        line, = axes[0].plot(prog["sequences"], prog["fid"], marker="o", label=run)
        axes[1].plot(prog["step"] * step_pflop, prog["fid"], marker="o", color=line.get_color(), label=run)
        log = pd.DataFrame(read_log(paths.train_log.of(preset, run)))
        key = next((k for k in ("val_nll_bits", "val_diffusion_loss") if k in log), None)
        if key is not None:
            val = log[log[key].notna()]
            axes[2].plot(val["step"] * step_pflop, val[key], marker="o", color=line.get_color(), label=run)
    labels = [("training sequences seen", f"FID ({extractor})"), ("training PFLOP", f"FID ({extractor})"),
              ("training PFLOP", "held-out NLL bits/token (diffusion loss for KL)")]
    for ax, (x, y) in zip(axes, labels):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, out)


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
    _save(fig, out)


def plot_samples(preset: str, runs: list[str], out: Path) -> None:
    cols = min(4, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, run in zip(axes.flat, runs):
        with Image.open(paths.sample_grid.of(preset, run)) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
        ax.set_title(run, fontsize=9)
    _save(fig, out)


# ----------------------------------------------------------------------------- families
def provenance(preset: str, cfg: Config, extractor: str) -> dict:
    return {"preset": preset, "commit": git_commit(), "dataset": cfg.data.dataset,
            "feature_extractor": extractor}


def write_family(params_path: str, preset: str, cfg: Config, family: str, out_dir: str | Path) -> dict:
    """``<family>.md`` (section with statement, table, plot), ``.csv`` (table), ``.json`` (metrics
    and statement) and ``.png`` (curves for Fig. 6-8, bars for the tables) of one family."""
    out_dir = Path(out_dir)
    runs = cfg.workflow.family_runs(family)
    if not runs:
        raise ValueError(f"preset '{preset}' lists no runs for family '{family}' (workflow.{FAMILIES[family]})")
    rows = pd.DataFrame([run_row(preset, r) for r in runs])
    extractor = rows["extractor"].iloc[0]
    agg = aggregate(rows, list(dict.fromkeys(rows["variant"])))
    seed_runs = cfg.workflow.noise_runs(family)
    seed_rows = pd.DataFrame([run_row(preset, r) for r in seed_runs]) if seed_runs else None
    floor = read_json(paths.noise_floor.of(preset))
    noise, source = family_noise(rows, seed_rows, floor, cfg.sample.num_samples)
    params = load_params(params_path)  # read and validated once, resolved per variant
    agg["n"] = [resolve(params, preset, v).train.supervision_density for v in agg["variant"]]
    paper_cols = paper_rows(family, preset, agg)
    table = family_table(agg, extractor, paper_cols)
    if family in ("fig7", "fig8"):
        table["n"] = list(agg["n"])
    if family == "fig7":
        table["w*n"] = list(agg["window"] * agg["n"])
    statement, verdict = {
        "table1": lambda: _order_statement(agg, paper_cols, "Table 1", noise),
        "table2": lambda: _table2_statement(preset, agg, paper_cols),
        "table4": lambda: _order_statement(agg, paper_cols, "Table 4", noise),
        "fig6": lambda: _tokens_statement(preset, runs, agg, floor, noise, cfg.sample.progress_samples),
        "fig7": lambda: _window_statement(agg, noise),
        "fig8": lambda: _density_statement(agg, noise),
    }[family]()
    title = TITLES[family] + (f" ({cfg.workflow.seeds} seeds, mean ± SD over seeds)"
                              if family == "table1" and cfg.workflow.seeds > 1 else "")
    png = out_dir / f"{family}.png"
    if family in CURVE_FAMILIES:
        plot_progress(preset, runs, title, extractor, png)
    else:
        plot_bars(agg, title, extractor, png)
    with atomic_path(out_dir / f"{family}.csv") as tmp:
        table.to_csv(tmp, index=False)
    noise_line = (f"Noise used for the verdicts (seed SD from {source}; floor at {cfg.sample.num_samples} "
                  f"samples): " + "; ".join(f"{m.upper()}: {noise[m].describe()}" for m in ("fid", "nll")))
    text = f"## {title}\n\n{statement}\n\n{noise_line}\n\n{markdown(table)}\n"
    if family == "table2" and not any(paper_cols):
        ref = pd.DataFrame([{"model": k, "paper FID": v["fid"], "paper IS": v["is"]}
                            for k, v in {**paper.TABLE2, **paper.PEERS_TABLE2}.items()])
        text += f"\nThe paper's Table 2 (ImageNet 256, Inception, no CFG), for reference:\n\n{markdown(ref)}\n"
    if family == "table4":
        text += ("\nPaper columns: Heptapod-L w256n1 with depth 31/1, 24/8, 16/16 (total 32), matched by "
                 "the split's shape (one-layer head, 3:1, 1:1).\n")
    text += f"\n![{family}]({family}.png)\n"
    write_text(out_dir / f"{family}.md", text)
    keys = [k for m in METRICS for k in (m, f"{m}_sd")] + ["nll_se", "nll_order_sd", "params_M", "train_PFLOP", "seeds"]
    metrics = {v: {k: _num(line[k]) for k in keys} for v, line in zip(agg["variant"], agg.to_dict("records"))}
    write_json(out_dir / f"{family}.json", {
        "family": family, "title": TITLES[family], "statement": statement, "verdict": verdict,
        "noise": {m: {"seed_sd": noise[m].seed_sd, "floor_sd": noise[m].floor_sd} for m in METRICS},
        "rule": verdicts.RULE_TEXT, "variants": metrics,
        "paper": {v: p for v, p in zip(agg["variant"], paper_cols) if p},
        "provenance": provenance(preset, cfg, extractor),
    })
    return {"family": family, "runs": len(runs)}


def _num(x):
    """JSON-safe number: None or NaN (no spread with one seed, no KID without reference
    features) becomes null."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


# ----------------------------------------------------------------------------- README
def write_report(params_path: str, preset: str, cfg: Config, out_dir: str | Path) -> dict:
    """README.md, runs.csv, metrics.json, training curves and samples of every run, from the
    family files ``write_family`` wrote."""
    out_dir = Path(out_dir)
    wf = cfg.workflow
    runs = wf.runs()
    families = list(wf.families())
    rows = pd.DataFrame([run_row(preset, r) for r in runs])
    extractor = rows["extractor"].iloc[0]
    params = load_params(params_path)  # read and validated once, resolved per run
    kinds = sorted({tokenizer_kind(resolve(params, preset, r)) for r in runs}, reverse=True)
    toks = {k: read_json(paths.tokenizer_metrics.of(preset, k)) for k in kinds}
    clf = read_json(paths.classifier_metrics.of(preset)) if extractor == "dataset classifier" else None
    with atomic_path(out_dir / "runs.csv") as tmp:
        rows.to_csv(tmp, index=False)
    fam = {f: read_json(out_dir / f"{f}.json") for f in families}
    prov = {**provenance(preset, cfg, extractor),
            "classifier_test_accuracy": clf["test_accuracy"] if clf else None}
    write_json(out_dir / "metrics.json", {
        "provenance": prov,
        "runs": {r["run"]: {k: _num(r[k]) for k in ("fid", "is", "kid", "nll", "dloss", "params_M", "train_PFLOP")}
                 for r in rows.to_dict("records")},
        "tokenizers": {k: {m: t[m] for m in ("rfid", "mse", "psnr")} for k, t in toks.items()},
    })
    plot_training(preset, runs, out_dir / "training_curves.png")
    plot_samples(preset, runs, out_dir / "samples.png")
    for k in toks:
        with atomic_path(out_dir / f"tokenizer_recon_{k}.png") as tmp:
            tmp.write_bytes(paths.tokenizer_recon.of(preset, k).read_bytes())

    grid = cfg.data.image_size // cfg.tokenizer.downsample
    extractor_line = (f"{extractor}; its test accuracy {clf['test_accuracy']:.4f}" if clf else extractor)
    evaluated = ", ".join(f"`{c}`" for c in sorted(set(rows["commit"])))
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
| dataset | {cfg.data.dataset} ({cfg.data.image_size}x{cfg.data.image_size}, {cfg.data.channels} channel(s)) |
| tokenizers | {', '.join(kinds)} ({grid}x{grid} grid, N = {grid * grid}) |
| feature extractor | {extractor_line} |
| samples / reference | {int(rows['samples'].iloc[0])} class-balanced samples per run vs {reference} |
| runs | {len(runs)} trained runs, {rows['train_min'].sum():.1f} min of training in all (wall time per run in `runs.csv`) |

All FID/IS/KID here are torch-fidelity metrics with the **{extractor}** as feature extractor:
comparable between rows of this report, not with the paper's Inception numbers on ImageNet
256, which stand beside ours in labelled columns ({paper.SOURCE}).

## What agrees with the paper and what does not
{convergence_line(rows)}

""" + "\n".join(f"- {fam[f]['statement']}" for f in families) + "\n\n" + noise_section(
        read_json(paths.noise_floor.of(preset)), rows, extractor) + "\n"
    text += "\n".join((out_dir / f"{f}.md").read_text() for f in families)
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
    return {"report": str(out_dir / "README.md"), "runs": len(runs), "families": families}


def noise_section(floor: dict, rows: pd.DataFrame, extractor: str) -> str:
    """The metric's noise floor, the seed noise of the replicated variants, and the rule."""
    lines = ["## Noise and the decision rule", "",
             f"**Metric noise floor** ({extractor}): real {floor['source']} images, class-balanced like "
             f"the samples, scored against the {floor['reference']} as every run is, "
             f"{next(iter(floor['by_count'].values()))['draws']} draws at each sample count. The mean is "
             "what a perfect generator would score at that count; the SD is what two equal generators "
             "differ by.", "", "| samples | FID | IS | KID |", "|---|---|---|---|"]
    for count, f in floor["by_count"].items():
        lines.append(f"| {count} | " + " | ".join(_pm(_nan(f[m]), _nan(f[f'{m}_sd'])) for m in ("fid", "is", "kid")) + " |")
    seed = verdicts.seed_noise(rows, METRICS)
    replicated = sorted({v for v, g in rows.groupby("variant") if len(g) > 1})
    lines += ["", "**Seed noise**: SD over seeds pooled over the variants trained with several seeds "
              f"({', '.join(replicated) or 'none'}): " + ", ".join(
                  f"{m.upper()} {_fmt(seed[m])}" for m in ("fid", "is", "kid", "nll") if seed[m] is not None)
              + (". " if replicated else "none measured. "),
              "", f"**Decision rule.** {verdicts.RULE_TEXT}", ""]
    return "\n".join(lines)


def tokenizer_table(toks: dict[str, dict]) -> str:
    lines = ["| tokenizer | rFID | MSE | PSNR (dB) | codes used | code perplexity | latent scale |",
             "|---|---|---|---|---|---|---|"]
    for k, t in toks.items():
        used = f"{t['codebook_used']} / {t['codebook_size']}" if "codebook_used" in t else "–"
        lines.append(f"| {k} | {t['rfid']:.4g} ({t['extractor']}) | {t['mse']:.4g} | {t['psnr']:.2f} | {used} | "
                     f"{_fmt(t.get('codebook_perplexity'))} | {_fmt(t.get('latent_scale'))} |")
    return "\n".join(lines)


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
