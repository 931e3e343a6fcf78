"""Has a run stopped moving? The same runs trained again with twice the steps.

The reports' stopping rule (held-out score moving < 1% over the last quarter of training) also
measures the learning-rate schedule: under cosine decay the last quarter holds the annealing
drop. The direct test is to train the same runs again on a longer schedule, everything else
equal. A run whose scores move by less than the decision rule's threshold when its training
doubles has stopped moving, and a verdict that holds at both budgets is not an artefact of
undertraining. Presets chain (a run trained 4x as long compares with the 2x one): every link is
judged with the noise of the chain's first preset, the one with a full Table 1 (its seed SD and
floor), and the standard error over held-out images, paired where both presets scored the same
tokens. Seed spread may change with training: where a longer budget trains seed replicates of
its own and they spread more, their SD takes over, and the link before's noise carries over to
the next (the threshold only ever grows along the chain, also where a link trains one seed). Each link
also sets the first preset's denser-supervision runs (Fig. 8) beside the chain by training
compute: more steps and more supervised prefixes per step are two ways to spend it.
"""

from __future__ import annotations

import math
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from heptapod import verdicts
from heptapod.analysis.summary import by_variant
from heptapod.data.store import LatentStore
from heptapod.provenance import provenance
from heptapod.report import statements
from heptapod.report.plots import plot_training
from heptapod.report.runs import PER_IMAGE, RunFiles, aggregate, paper_rows, run_rows
from heptapod.report.tables import fmt, markdown, moving_text
from heptapod.utils.io import read_json, write_json, write_text

SCORES = (("nll", "held-out NLL (bits/token)"), ("fid", "FID"))
# judge(after, before): 'agrees' means the longer run is better by more than the threshold
MOVED = {"agrees": "improved", "disagrees": "got worse", "within noise": "stopped moving"}
# a by-step verdict on the 2D run against the 1D one ('agrees': the 2D run is ahead there)
SIDE = {"agrees": "2D ahead", "disagrees": "2D behind", "within noise": "within noise"}


def _unpair(*frames: pd.DataFrame) -> None:
    """Drop the per-image scores of run rows scored on other held-out tokens than those they are
    set beside: their NLL differences then take the unpaired standard error."""
    for rows in frames:
        rows[PER_IMAGE] = None


def same_tokens(first: str | Path, second: str | Path) -> bool:
    """Whether two test latent stores hold the same held-out tokens (the same images, encoded
    by tokenizers with the same weights), which the paired standard errors need."""
    with closing(LatentStore(first)) as a, closing(LatentStore(second)) as b:
        return (a.continuous == b.continuous and np.array_equal(a.codes[:], b.codes[:])
                and np.array_equal(a.labels[:], b.labels[:]))


def seed_spread(budgets: dict[str, pd.DataFrame], variants: list[str]) -> pd.DataFrame:
    """Per budget (preset name: its run rows): the pooled seed SD of each score over ``variants``
    and the seeds per variant, so the first budget's spread sets beside the longer ones'."""
    out = []
    for name, rows in budgets.items():
        rows = rows[rows["variant"].isin(variants)]
        counts = rows.groupby("variant").size()
        sd = verdicts.seed_noise(rows, tuple(m for m, _ in SCORES))
        out.append({"preset": name, "steps": int(rows["steps"].iloc[0]),
                    "seeds per variant": "–".join(map(str, sorted({int(counts.min()), int(counts.max())}))),
                    **{f"{label} seed SD": sd[m] for m, label in SCORES}})
    return pd.DataFrame(out)


def chain_noise(first: dict[str, verdicts.Noise], spread: pd.DataFrame,
                earlier: dict[str, dict] | None = None) -> dict[str, verdicts.Noise]:
    """The first preset's noise, its seed SD replaced by a longer budget's where that one is
    measured (replicates at that budget) and larger: a threshold set at the first budget must
    not understate the spread of runs trained longer. ``earlier``: the link before's noise (its
    report's ``noise``), so a spread measured at an earlier budget of the chain still counts
    where this link's presets train one seed."""
    out = dict(first)
    for m, label in SCORES:
        measured = spread[f"{label} seed SD"].iloc[1:].dropna().tolist()
        if earlier is not None and earlier[m]["seed_sd"] is not None:
            measured.append(earlier[m]["seed_sd"])
        if measured and (first[m].seed_sd is None or max(measured) > first[m].seed_sd):
            out[m] = replace(first[m], seed_sd=max(measured))
    return out


def read_earlier_link(path: str | Path) -> dict:
    """The link before's convergence.json, checked for what the next link reads of it: the
    presets it compared and each score's noise."""
    link = read_json(path)
    noise = link.get("noise") if isinstance(link, dict) else None
    if not (isinstance(noise, dict) and all(isinstance(noise.get(m), dict) and "seed_sd" in noise[m]
                                            for m, _ in SCORES) and {"shorter", "longer"} <= set(link)):
        raise ValueError(f"{path}: not a doubling test's report (needs 'shorter', 'longer' and a seed SD per "
                         f"score under 'noise'); rebuild it with the convergence target")
    return link


def judge_runs(before: pd.Series, after: pd.Series, noise: dict) -> dict[str, dict]:
    """Per score: the run's value at both budgets, the change (positive: better after) and
    whether it moved by the decision rule."""
    labels = (f"{before['run']} at {before['steps']} steps", f"at {after['steps']} steps")
    pair = pd.DataFrame([{**before.to_dict(), "variant": labels[0]}, {**after.to_dict(), "variant": labels[1]}])
    out = {}
    for metric, _ in SCORES:
        verdict, text = statements.judge(pair, labels[1], labels[0], metric, noise)
        gain = before[metric] - after[metric] if verdicts.LOWER_IS_BETTER[metric] else after[metric] - before[metric]
        out[metric] = {"before": before[metric], "after": after[metric], "gain": gain,
                       "relative_gain": gain / abs(before[metric]), "moved": MOVED[verdict], "account": text}
    return out


def steps_section(budgets: dict[str, dict], variants: list[str]) -> tuple[list[str], dict]:
    """Held-out NLL by generation step at each budget (label: that preset's analysis/steps.json),
    per quarter of the steps: each of ``variants``' mean over seeds, and each 2D-vs-1D margin
    with the verdict that budget's own rule gave it. Which part of the grid the longer training
    improves: early steps predict from little context, late ones fill in a nearly finished grid."""
    bounds = next(iter(budgets.values()))["quarter_steps"]
    rows, margins = [], {}
    for i, (lo, hi) in enumerate(bounds):
        row = {"steps": f"{lo}-{hi}"}
        means = {label: by_variant({run: q[i] for run, q in steps["quarters"].items()})
                 for label, steps in budgets.items()}
        for v in variants:
            for label in budgets:
                row[f"{v}, {label}"] = means[label][v]["mean"] if v in means[label] else None
        for label, steps in budgets.items():
            for judged in steps["judged"][i]["verdicts"]:
                if judged["better"] in variants and judged["worse"] in variants:
                    gap = judged["values"][0] - judged["values"][1]
                    key = f"{judged['better']} - {judged['worse']}"
                    margins.setdefault(key, {}).setdefault(label, []).append(
                        {"steps": [lo, hi], "margin": gap, "threshold": judged["threshold"], "verdict": judged["verdict"]})
                    row[f"{key}, {label}"] = f"{gap:+.3f} ({SIDE[judged['verdict']]}, threshold {judged['threshold']:.3f})"
        rows.append(row)
    lines = ["## Held-out NLL by generation step at each budget", "",
             "Bits per token in each quarter of the generation steps (mean over seeds; `analysis/steps.md` "
             "of each preset: the same held-out images and orders), and each 2D-vs-1D margin of the same "
             "order (negative: the 2D run is ahead) with the verdict of that budget's own rule. Early steps "
             "predict from little context, late ones fill in a nearly finished grid: this says where the "
             "longer training moved each run, and the gap between them.", "", markdown(pd.DataFrame(rows)), ""]
    return lines, {"quarters": rows, "margins": margins}


def compute_section(budgets: dict[str, pd.DataFrame], dense: pd.DataFrame, supervision: dict[str, int],
                    noise: dict) -> tuple[list[str], dict, list[tuple[str, list[float], list[float]]]]:
    """Denser supervision or longer training, at equal compute. ``budgets``: each budget's runs of
    the chained variants (label: run rows); ``dense``: the first budget's density-sweep runs
    (Fig. 8's n > 1), which buy compute per step where the chain buys steps; ``supervision``: n
    per variant. Each dense variant (mean over seeds) is judged against each chained variant at
    the budget closest to it in training compute (log scale), by the same rule. Also the
    held-out NLL against compute per variant, for the figure."""
    lines_out = []
    agg = pd.DataFrame([{**a.to_dict(), "variant": f"{a['variant']}, {int(a['steps'])} steps", "of": a["variant"],
                         "budget": label}
                        for label, rows in (*budgets.items(), ("dense", dense)) for _, a in aggregate(rows).iterrows()])

    def supervised(p) -> str:
        return "1D head, every step" if p["head"] == "1d" else f"n = {supervision.get(p['of'], 1)}"

    table = pd.DataFrame([{"run": p["variant"], "supervision": supervised(p), "seeds": int(p["seeds"]),
                           "train PFLOP": p["train_PFLOP"], "held-out NLL (bits/token)": p["nll"], "FID": p["fid"]}
                          for _, p in agg.sort_values("train_PFLOP").iterrows()])
    chained = list(dict.fromkeys(agg.loc[agg["budget"] != "dense", "of"]))
    judged = []
    for _, d in agg[agg["budget"] == "dense"].iterrows():
        for v in chained:
            rows = agg[agg["of"] == v]
            c = rows.loc[(np.log(rows["train_PFLOP"] / d["train_PFLOP"])).abs().idxmin()]
            ratio = c["train_PFLOP"] / d["train_PFLOP"]
            verdicts_, texts = {}, []
            for metric, name in SCORES:
                if math.isnan(d[metric]) or math.isnan(c[metric]):
                    continue
                verdict, text = statements.judge(agg, d["variant"], c["variant"], metric, noise)
                verdicts_[metric] = verdict  # 'agrees': the dense run is ahead
                ahead = {"agrees": d["variant"], "disagrees": c["variant"]}.get(verdict)
                texts.append(f"{name}: **{f'{ahead} ahead' if ahead else verdict}** ({text})")
            judged.append({"dense": d["variant"], "versus": c["variant"], "compute_ratio": ratio, **verdicts_})
            lines_out.append(f"- {d['variant']} ({supervised(d)}, {fmt(d['train_PFLOP'])} PFLOP) vs {c['variant']} "
                             f"({supervised(c)}, {fmt(c['train_PFLOP'])} PFLOP: {ratio:.2g}x the dense run's): "
                             + "; ".join(texts))
    lines = ["## Denser supervision or longer training, at equal compute", "",
             "The paper's Fig. 8 sets supervision densities side by side at equal steps, where each extra "
             "supervised prefix also costs compute; the doubling chain spends compute on more steps of the "
             "same runs instead. Each density-sweep run of the first budget (its final, annealed weights) "
             "beside the chained runs at every budget so far, by training compute; each is judged against "
             "each chained variant at the budget closest to it in compute (the ratio says how close), by "
             "the same rule and noise.", "", markdown(table), "", *lines_out, ""]
    curves = [(f"{v}, longer training", list(g["train_PFLOP"]), list(g["nll"])) for v, g in
              ((v, agg[agg["of"] == v].sort_values("train_PFLOP")) for v in chained)]
    # the dense runs' own line starts at the same head supervised once per sequence (n = 1), first budget
    first, dense_points = agg[agg["budget"] == next(iter(budgets))], agg[agg["budget"] == "dense"]
    base = first[first["head"].isin(set(dense_points["head"])) & (first["of"].map(supervision) == 1)]
    dense_curve = pd.concat([base, dense_points]).sort_values("train_PFLOP")
    ns = ", ".join(str(supervision.get(v, 1)) for v in dense_curve["of"])
    curves.append((f"denser supervision, n = {ns} at {int(first['steps'].iloc[0])} steps",
                   list(dense_curve["train_PFLOP"]), list(dense_curve["nll"])))
    return lines, {"points": table.to_dict(orient="records"), "judged": judged}, curves


def convergence_report(shorter: dict[str, RunFiles], longer: dict[str, RunFiles], first: dict[str, RunFiles],
                       floor_path: str | Path, samples: int, latents: tuple[str | Path, str | Path],
                       names: tuple[str, str, str], out_md: str | Path, out_json: str | Path,
                       dataset: str, step_files: tuple[str | Path, ...] = (), density: tuple[str, ...] = (),
                       supervision: dict[str, int] | None = None, first_latents: str | Path | None = None,
                       earlier_link: str | Path | None = None) -> dict:
    """``convergence.md``/``.json`` (and a ``.png`` of every budget's training curves): how far
    each run of ``longer`` moved from its namesake in ``shorter``, and whether Table 1's verdicts
    hold at both budgets. ``first``: every Table 1 run of the chain's first preset, which give
    the seed noise (and, where that preset is not ``shorter``, the runs' first budget);
    ``latents``: the test latent stores of ``shorter`` and ``longer``; ``names``: the presets
    ``shorter``, ``longer`` and the first; ``step_files``: their held-out NLL by generation step
    (``analysis/steps.json``, in the order of ``names``; the first's only where it is not
    ``shorter``), set side by side where given; ``density``: which runs of ``first`` are its
    density sweep's (Fig. 8, n > 1) and not Table 1's, set beside the chain at equal compute
    (``supervision``: n per variant; ``first_latents``: the first's test latent store, which
    pairs their images with the longer runs'); ``earlier_link``: the convergence.json of the link
    before (``shorter`` against its own shorter preset), whose noise carries over."""
    dense = {r: first[r] for r in density}
    first = {r: f for r, f in first.items() if r not in dense}  # Table 1's: the noise
    for other, name in ((shorter, names[0]), (first, names[2])):
        missing = [r for r in longer if r not in other]
        if missing:
            raise ValueError(f"runs of {names[1]} without a namesake in {name}: {', '.join(missing)}")
    all_first, short_rows, long_rows = run_rows(first), run_rows(shorter), run_rows(longer)
    first_noise, _ = statements.family_noise(all_first, None, read_json(floor_path), samples)
    short_rows = short_rows.set_index("run").loc[list(longer)].reset_index()
    variants = list(dict.fromkeys(long_rows["variant"]))
    spread = seed_spread({names[2]: all_first, **({} if names[2] == names[0] else {names[0]: short_rows}),
                          names[1]: long_rows}, variants)
    earlier = read_earlier_link(earlier_link) if earlier_link else None
    noise = chain_noise(first_noise, spread, earlier["noise"] if earlier else None)
    seeds = int(long_rows.groupby("variant").size().min())
    # the chain's first budget, where it is not the shorter one: where the runs started from
    start = None if names[2] == names[0] else all_first.set_index("run").loc[list(longer)]
    paired = same_tokens(*latents)
    if not paired:  # other held-out tokens: the images' scores cannot be set side by side
        _unpair(short_rows, long_rows)
    runs = {r: judge_runs(short_rows.iloc[i], long_rows.iloc[i], noise) for i, r in enumerate(longer)}
    table = pd.DataFrame([
        {"run": r, "score": name,
         **({f"{names[2]} ({int(start.loc[r, 'steps'])} steps)": start.loc[r, m]} if start is not None else {}),
         f"{names[0]} ({int(short_rows.iloc[i]['steps'])} steps)": s[m]["before"],
         f"{names[1]} ({int(long_rows.iloc[i]['steps'])} steps)": s[m]["after"],
         "gain": s[m]["gain"], "gain %": 100 * s[m]["relative_gain"], "moved": s[m]["moved"],
         "last-quarter change (longer run)": moving_text(long_rows.iloc[i]["val_change_last_quarter"])
         if m == "nll" else "–"}
        for i, (r, s) in enumerate(runs.items()) for m, name in SCORES])
    budgets = {}
    for name, rows in zip(names[:2], (short_rows, long_rows)):
        agg = aggregate(rows)
        budgets[name] = dict(zip(("statement", "verdict"), statements.order_statement(
            agg, paper_rows("table1", name, agg), "Table 1", noise)))
    before, after = (budgets[n]["verdict"] for n in names[:2])
    held = {k: {names[0]: before.get(k), names[1]: after.get(k), "holds": before.get(k) == after.get(k)}
            for k in sorted(set(before) | set(after))}
    stopped = {m: sum(s[m]["moved"] == "stopped moving" for s in runs.values()) for m, _ in SCORES}
    steps = [int(rows["steps"].iloc[0]) for rows in (short_rows, long_rows)]
    longer_by = f"{steps[1] / steps[0]:.3g}x the steps"
    # every budget of the chain so far (the first only where it is not the shorter), by its steps
    label = {n: f"{n} ({k} steps)" for n, k in zip(names, (*steps, int(all_first["steps"].iloc[0])))}
    by_step, step_lines = None, []
    if step_files:
        order = ([names[2]] if start is not None else []) + list(names[:2])
        step_file = dict(zip(names, step_files))  # the first's only where it is not the shorter
        step_lines, by_step = steps_section({label[n]: read_json(step_file[n]) for n in order}, variants)
    by_compute, compute_lines, ends = None, [], None
    if dense:
        at = {label[names[2]]: all_first[all_first["variant"].isin(variants)].copy()}  # every seed
        if start is not None:
            at[label[names[0]]] = short_rows
        at[label[names[1]]] = long_rows
        dense_rows = run_rows(dense)
        # images pair only where every budget scored the same held-out tokens
        if not (paired and (start is None or (first_latents is not None and same_tokens(first_latents, latents[1])))):
            _unpair(*at.values(), dense_rows)
        compute_lines, by_compute, ends = compute_section(at, dense_rows, supervision or {}, noise)
    png = Path(out_md).with_suffix(".png")
    curves = [(names[0], shorter), (names[1], longer)] if start is None else \
        [(names[2], first), (names[0], shorter), (names[1], longer)]
    plot_training({f"{r} ({name})": files[r] for name, files in curves for r in longer},
                  f"{names[0]} vs {names[1]}: the same runs, {longer_by}", png, ends=ends)
    lines = [
        f"# Have the runs of `{names[0]}` stopped moving? `{names[0]}` vs `{names[1]}`", "",
        f"The runs of `{names[1]}` are `{names[0]}`'s runs of the same name trained again with {longer_by} "
        "(the same data, seed, model, learning-rate schedule stretched over the longer run, "
        "sample count and held-out images). A run has **stopped moving** when the longer training "
        "changes a score by less than the decision rule's threshold; a verdict that holds at both "
        "budgets is not an artefact of undertraining.", "",
        f"**By held-out NLL {stopped['nll']} of {len(runs)} runs stopped moving; by FID {stopped['fid']} of "
        f"{len(runs)}. {sum(v['holds'] for v in held.values())} of {len(held)} Table 1 verdicts hold "
        "at both budgets.**", "",
        f"Noise: the seed SD of `{names[2]}`'s Table 1 (every seed), or of a longer budget's own seeds "
        f"where it has several and they spread more"
        + (f" (here or at an earlier link of the chain: `{earlier['shorter']}` vs `{earlier['longer']}`'s "
           "noise carries over, so a threshold never shrinks along the chain)" if earlier else "")
        + f", and the floor SD at {samples} samples: "
        + "; ".join(f"{m.upper()}: {noise[m].describe()}" for m, _ in SCORES) + ". NLL "
        "standard errors are " + ("paired image by image (both presets scored the same held-out tokens)."
                                  if paired else "unpaired: the presets' held-out tokens differ "
                                  "(another tokenizer or image set), so images cannot be paired."), "",
        f"**Decision rule.** {verdicts.RULE_TEXT}", "", "## Each run at both budgets", "", markdown(table), "",
        *[f"- {r}: " + "; ".join(f"{name}: {s[m]['account']}" for m, name in SCORES) for r, s in runs.items()],
        "", "## Seed spread at each budget", "",
        f"Pooled over {', '.join(variants)} (one seed: unmeasured). Where training longer widens it, the "
        "first budget's noise would set too low a threshold; the rule then takes the larger.", "",
        markdown(spread), "",
        f"## Table 1's verdicts at both budgets ({'seed 0' if seeds == 1 else f'mean over {seeds} seeds'} "
        "of each variant)", "",
        f"| comparison | {names[0]} | {names[1]} | holds |", "|---|---|---|---|",
        *[f"| {k} | {v[names[0]]} | {v[names[1]]} | {'yes' if v['holds'] else '**no**'} |" for k, v in held.items()],
        "", *[f"- `{n}`: {budgets[n]['statement']}" for n in names[:2]], "", *step_lines, *compute_lines,
        f"![training curves at both budgets]({png.name})", ""]
    write_text(out_md, "\n".join(lines))
    write_json(out_json, {
        "shorter": names[0], "longer": names[1], "noise_from": names[2], "paired": paired, "stopped": stopped,
        "noise_carried_from": None if earlier is None else [earlier["shorter"], earlier["longer"]],
        "runs": runs, "first_budget": None if start is None else {
            r: {"steps": int(start.loc[r, "steps"]), **{m: float(start.loc[r, m]) for m, _ in SCORES}} for r in longer},
        "verdicts": held, "statements": {n: budgets[n]["statement"] for n in names[:2]}, "by_step": by_step,
        "by_compute": by_compute,
        "noise": {m: {"seed_sd": noise[m].seed_sd, "floor_sd": noise[m].floor_sd} for m, _ in SCORES},
        "seed_spread": spread.astype(object).where(spread.notna(), None).to_dict(orient="records"),  # NaN: null
        "rule": verdicts.RULE_TEXT,
        "provenance": provenance(names[1], dataset, feature_extractor=long_rows["extractor"].iloc[0])})
    return {"stopped": stopped, "verdicts_held": sum(v["holds"] for v in held.values()), "verdicts": len(held)}
