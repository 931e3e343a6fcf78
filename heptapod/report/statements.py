"""What each family says: the noise its differences are judged against, and its verdict on the
paper's claim by the decision rule of ``heptapod.verdicts``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from heptapod import paper, verdicts
from heptapod.config import split_run
from heptapod.report.runs import METRICS, MOVING, PER_IMAGE
from heptapod.report.tables import fmt, pm
from heptapod.utils.io import read_json


def family_noise(rows: pd.DataFrame, seed_rows: pd.DataFrame | None, floor: dict | None,
                 samples: int) -> tuple[dict[str, verdicts.Noise], str]:
    """The noise of each metric for one family: seed SD pooled over the family's own seed
    replicates (else over ``seed_rows``, Table 1's), floor SD at the runs' sample count; and
    where the seed SD came from."""
    scores = (*METRICS, "val_move")  # and how far a run's held-out score moved in its last quarter
    own = verdicts.seed_noise(rows, scores)
    other = verdicts.seed_noise(seed_rows, scores) if seed_rows is not None else {}
    at = (floor or {}).get("by_count", {}).get(str(samples), {})
    source = ("its own seed replicates" if own["fid"] is not None else
              "Table 1's seed replicates" if seed_rows is not None else "no seed replicates (seed noise unmeasured)")
    return {m: verdicts.Noise(own[m] if own[m] is not None else other.get(m), at.get(f"{m}_sd"))
            for m in scores}, source


def judge(agg: pd.DataFrame, better: str, worse: str, metric: str, noise: dict) -> tuple[str, str]:
    """Verdict of 'better beats worse' on one metric, and a short account of the numbers."""
    a, b = (agg.set_index("variant").loc[v] for v in (better, worse))
    extra, se_text = 0.0, ""
    if metric == "nll":
        paired = verdicts.paired_se(a.get(PER_IMAGE), b.get(PER_IMAGE))
        if paired is None:  # files without per-image scores: the two runs' SEs, as if independent
            extra = math.sqrt(a["nll_se"] ** 2 + b["nll_se"] ** 2)
        else:
            extra, se_text = paired, f", paired SE over images {fmt(paired)}"
    thr = noise[metric].threshold(extra if extra == extra else 0.0)
    verdict = verdicts.compare(a[metric], b[metric], metric, thr)
    return verdict, (f"{better} {fmt(a[metric])} vs {worse} {fmt(b[metric])} (threshold {fmt(thr)}{se_text}): "
                     f"{verdict}")


def judged_lines(agg: pd.DataFrame, pairs: list[tuple[str, str]], noise: dict) -> tuple[list[str], dict]:
    """One line per score (FID, held-out NLL) judging every (better, worse) pair, and the
    combined verdict per score; a score that a compared variant lacks is left out."""
    compared = agg.set_index("variant").loc[list(dict.fromkeys(v for pair in pairs for v in pair))]
    lines, out = [], {}
    for metric, name in (("fid", "FID"), ("nll", "held-out NLL")):
        if compared[metric].isna().any():
            continue
        results = [judge(agg, a, b, metric, noise) for a, b in pairs]
        out[metric] = verdicts.combine([v for v, _ in results])
        lines.append(f"By {name}: **{out[metric]}** ({'; '.join(t for _, t in results)}).")
    trend = margin_trend_line(agg, pairs, noise["val_move"].seed_sd)
    return lines + ([trend] if trend else []), out


def margin_trend_line(agg: pd.DataFrame, pairs: list[tuple[str, str]], move_sd: float | None) -> str | None:
    """How the held-out margin of each (better, worse) pair moved over the last quarter of
    training, on the runs' validation curves (mean over seeds): whether more training could
    still reverse a verdict. ``move_sd``: the seed SD of one run's last-quarter move, which
    gives the change its standard error. None where no pair has both curves on the same score
    and steps."""
    a = agg.set_index("variant")
    parts, keys = [], set()
    for better, worse in pairs:
        x, y = a.loc[better], a.loc[worse]
        ends = [x["val_3q"], x["val_end"], y["val_3q"], y["val_end"]]
        if x["val_key"] != y["val_key"] or x["val_3q_step"] != y["val_3q_step"] or any(map(math.isnan, ends)):
            continue
        keys.add(x["val_key"])
        before, after = y["val_3q"] - x["val_3q"], y["val_end"] - x["val_end"]  # > 0: better is ahead
        change = after - before
        se = move_sd * math.sqrt(1 / x["seeds"] + 1 / y["seeds"]) if move_sd else float("nan")
        trend = "crossed" if before * after < 0 else "narrowing" if abs(after) < abs(before) else "widening"
        if math.isnan(se):
            trend += f", change {change:+.3g}; seed noise unmeasured"
        elif abs(change) <= 2 * se:
            trend = f"steady: change {change:+.3g} ± {se:.2g} SE over seeds, within 2 SE"
        else:
            trend += f", change {change:+.3g} ± {se:.2g} SE over seeds"
        parts.append(f"{better} vs {worse}: {_side(before)} at step {int(x['val_3q_step'])}, "
                     f"{_side(after)} at the end ({trend})")
    if not parts or len(keys) > 1:
        return None
    score = "NLL bits/token" if keys == {"val_nll_bits"} else "diffusion loss"
    return (f"Held-out margins over the last quarter of training (validation curves, {score}, mean over "
            f"seeds): {'; '.join(parts)}. A narrowing margin may still reverse with more training.")


def _side(margin: float) -> str:
    return f"{'ahead' if margin > 0 else 'behind'} by {fmt(abs(margin))}" if margin else "level"


def order_statement(agg: pd.DataFrame, paper_cols: list[dict | None], what: str,
                    noise: dict) -> tuple[str, dict]:
    matched = [(v, p["fid"]) for v, p in zip(agg["variant"], paper_cols) if p]
    if len(matched) < 2:
        return f"{what}: fewer than two variants with a paper counterpart; nothing to rank.", {}
    theirs = [v for v, _ in sorted(matched, key=lambda m: m[1])]
    lines, out = judged_lines(agg, list(zip(theirs, theirs[1:])), noise)
    return " ".join([f"{what}: the paper's order (FID, best first) is {' < '.join(theirs)}.", *lines]), out


def density_statement(agg: pd.DataFrame, noise: dict, one_d: pd.DataFrame | None = None) -> tuple[str, dict]:
    """Fig. 8: the densest supervision against n = 1; with ``one_d`` (Table 1's 1D model on
    random orders, aggregated over its seeds) also the densest 2D run against it: the 1D model
    supervises every step, the paper's 2D model one prefix per sequence."""
    a = agg.sort_values("n")
    lo, hi = a.iloc[0]["variant"], a.iloc[-1]["variant"]
    lines, out = judged_lines(agg, [(hi, lo)], noise)
    by_n = "FID by n: " + ", ".join(f"n={int(n)}: {fmt(f)}" for n, f in zip(a["n"], a["fid"])) + "."
    parts = [f"Fig. 8 (paper: {paper.CLAIMS['fig8']}): n = {int(a.iloc[0]['n'])} vs "
             f"n = {int(a.iloc[-1]['n'])}.", *lines, by_n]
    if one_d is not None and not one_d.empty:
        base = one_d.iloc[0]
        both = pd.concat([agg, one_d.iloc[:1]], ignore_index=True)
        versus, verdict = judged_lines(both, [(hi, base["variant"])], noise)
        ratio = a.iloc[-1]["train_PFLOP"] / base["train_PFLOP"]
        parts += [f"Densest 2D against Table 1's {base['variant']} (1D head, random orders, every step "
                  f"supervised; {base['seeds']} seeds; {hi} spent {ratio:.2g}x its training compute)."] + versus
        out.update({f"{k}_vs_{base['variant']}": v for k, v in verdict.items()})
    return " ".join(parts), out


def window_statement(agg: pd.DataFrame, noise: dict) -> tuple[str, dict]:
    base, rest = agg[agg["n"] == 1], agg[agg["n"] > 1]
    if base.empty or rest.empty:
        return "Fig. 7: not enough window variants to compare.", {}
    g = base.iloc[0]["variant"]
    lines, out = judged_lines(agg, [(g, v) for v in rest["variant"]], noise)
    return " ".join([f"Fig. 7 (paper: {paper.CLAIMS['fig7']}): w = N (n = 1) against each local window.",
                     *lines]), out


def tokens_statement(agg: pd.DataFrame, progress: dict[str, Path], floor: dict | None,
                     noise: dict, progress_samples: int) -> tuple[str, dict]:
    """Paper: VQ converges faster early, the VAE ends better. Judged at the first snapshot (its
    FID averaged over each variant's seeds; the floor at the snapshots' sample count) and at the
    end (with the family's FID noise); ``progress`` holds every run's snapshot scores."""
    if len(agg) < 2:
        return "Fig. 6: not enough token types to compare.", {}
    kinds = dict(zip(agg["tokens"], agg["variant"]))
    if set(kinds) != {"discrete", "continuous"}:
        return "Fig. 6: needs one discrete and one continuous run.", {}
    vq, kl = kinds["discrete"], kinds["continuous"]
    firsts: dict[str, list[dict]] = {}
    for run, path in progress.items():
        firsts.setdefault(split_run(run)[0], []).append(read_json(path)["progress"][0])
    steps = {int(f["step"]) for v in (vq, kl) for f in firsts[v]}
    if len(steps) != 1:
        raise ValueError(f"Fig. 6: the runs' first snapshots are at different steps {sorted(steps)}")
    first = {v: float(np.mean([f["fid"] for f in firsts[v]])) for v in (vq, kl)}
    counts = [len(firsts[v]) for v in (vq, kl)]
    seeds = "one seed each" if counts == [1, 1] else f"mean over {counts[0]} and {counts[1]} seeds"
    early_floor = (floor or {}).get("by_count", {}).get(str(progress_samples), {}).get("fid_sd")
    # seeds spread far more early in training than at the end: with replicates, the first
    # snapshot is judged by its own seed SD, else by the family's (end-of-training) one
    early_sd = verdicts.pooled_sd([[f["fid"] for f in firsts[v]] for v in (vq, kl)])
    sd_from = "the first snapshot's" if early_sd is not None else "the end's"
    early_thr = verdicts.Noise(early_sd if early_sd is not None else noise["fid"].seed_sd, early_floor).threshold()
    early = verdicts.compare(first[vq], first[kl], "fid", early_thr)
    late, late_text = judge(agg, kl, vq, "fid", noise)
    text = (f"Fig. 6 (paper: {paper.CLAIMS['fig6']}). Early (first snapshot, step {steps.pop()}, "
            f"{seeds}): VQ faster by FID: **{early}** ({vq} {fmt(first[vq])} vs "
            f"{kl} {fmt(first[kl])}, threshold {fmt(early_thr)} from {sd_from} seed SD). End: VAE better "
            f"by FID: **{late}** "
            f"({late_text}).")
    return text, {"fid_early": early, "fid_end": late}


def table2_statement(preset: str, agg: pd.DataFrame, paper_cols: list[dict | None]) -> tuple[str, dict]:
    ours = ", ".join(f"{v}: FID {fmt(f)}, IS {fmt(i)}, NLL {fmt(n)}"
                     for v, f, i, n in zip(agg["variant"], agg["fid"], agg["is"], agg["nll"]))
    if paper_cols and paper_cols[0]:
        return (f"Table 2: {ours}; paper {paper.table2_key(preset)}: FID {paper_cols[0]['fid']}, "
                f"IS {paper_cols[0]['is']}."), {}
    return (f"Table 2: {ours}; the paper's ImageNet numbers are listed below for reference, not for "
            "comparison."), {}


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


def reference_points(floor: dict, samples: int) -> tuple[str, dict]:
    """Where a run's scores sit between real images (the floor's mean at the runs' sample count)
    and real images through each tokenizer the runs read (its ceiling): a line and its data."""
    at, scores = (floor.get("by_count") or {}).get(str(samples), {}), ("fid", "precision", "recall")
    points = {"real images (floor)": {m: at.get(m) for m in scores},
              **{f"through the {kind} tokenizer (ceiling)": {m: t[m] for m in scores}
                 for kind, t in (floor.get("tokenized") or {}).items()}}
    text = "; ".join(f"{name}: FID {fmt(p['fid'])}, precision {fmt(p['precision'])}, recall {fmt(p['recall'])}"
                     for name, p in points.items())
    return f"Reference points at {samples} samples: {text}.", points


def noise_section(floor: dict, rows: pd.DataFrame, extractor: str) -> str:
    """The metric's noise floor, the seed noise of the replicated variants, and the rule."""
    lines = ["## Noise and the decision rule", "",
             f"**Metric noise floor** ({extractor}): real {floor['source']} images, class-balanced like "
             f"the samples, scored against the {floor['reference']} as every run is, "
             f"{next(iter(floor['by_count'].values()))['draws']} draws at each sample count. The mean is "
             "what a perfect generator would score at that count; the SD is what two equal generators "
             "differ by.", "", "| samples | FID | IS | KID | precision | recall |", "|---|---|---|---|---|---|"]
    nan, scores = float("nan"), ("fid", "is", "kid", "precision", "recall")
    for count, f in floor["by_count"].items():
        lines.append(f"| {count} | " + " | ".join(
            pm(nan if f.get(m) is None else f[m], nan if f.get(f"{m}_sd") is None else f[f"{m}_sd"])
            for m in scores) + " |")
    for kind, t in floor.get("tokenized", {}).items():
        lines.append(f"| {t['samples']}, through the {kind} tokenizer | "
                     + " | ".join(fmt(t[m]) for m in scores) + " |")
    if floor.get("tokenized"):
        lines += ["", "**Tokenizer ceiling** (the rows through a tokenizer): the first draw of real images, "
                  "encoded and decoded by the tokenizer the runs read, scored the same way: the best a "
                  "perfect generator of its tokens could score. The distance from a run to it is the "
                  "generator's; from it to the floor, the tokenizer's."]
    lines += ["", "**Precision / recall** (improved precision and recall, k = 3 nearest neighbours in the "
              "same features): the share of samples inside the real images' manifold (fidelity) and of "
              "real images inside the samples' (diversity), which FID mixes into one number. They are "
              "shown beside FID, not judged; the floor's row is what real images score."]
    seed = verdicts.seed_noise(rows, METRICS)
    replicated = sorted({v for v, g in rows.groupby("variant") if len(g) > 1})
    lines += ["", "**Seed noise**: SD over seeds pooled over the variants trained with several seeds "
              f"({', '.join(replicated) or 'none'}): " + ", ".join(
                  f"{m.upper()} {fmt(seed[m])}" for m in ("fid", "is", "kid", "nll") if seed[m] is not None)
              + (". " if replicated else "none measured. "),
              "", f"**Decision rule.** {verdicts.RULE_TEXT}", ""]
    return "\n".join(lines)
