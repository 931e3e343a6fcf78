"""One family's report: ``<family>.md`` (statement, table, plot), ``.csv``, ``.json``, ``.png``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from heptapod import paper, verdicts
from heptapod.config import CURVE_FAMILIES, FAMILIES, Config, resolve
from heptapod.provenance import provenance
from heptapod.report import statements
from heptapod.report.plots import plot_bars, plot_progress
from heptapod.report.runs import METRICS, RunFiles, aggregate, paper_rows, run_rows
from heptapod.report.tables import family_table, markdown, num
from heptapod.utils.io import atomic_path, read_json, write_json, write_text

TITLES = {
    "table1": "Table 1 analogue: sampler and order",
    "table2": "Table 2 analogue: the headline model",
    "table4": "Table 4 analogue: backbone / head depth split (total depth fixed)",
    "fig6": "Fig. 6 analogue: discrete (VQ) vs continuous (KL) tokens, same model size",
    "fig7": "Fig. 7 analogue: window size w at constant w·n",
    "fig8": "Fig. 8 analogue: supervision density n at w = N",
}


def seeds_note(seeds: pd.Series) -> str:
    """The title's seed count: "3 seeds", or "1-3 seeds per variant" where the variants differ
    (a family can borrow another's seeds for one variant); nothing where every variant has one."""
    low, high = int(seeds.min()), int(seeds.max())
    if high <= 1:
        return ""
    count = f"{high} seeds" if low == high else f"{low}-{high} seeds per variant"
    return f" ({count}, mean ± SD over seeds)"


def one_d_random(rows: pd.DataFrame | None) -> pd.DataFrame | None:
    """Table 1's 1D model on random orders, aggregated over its seeds (None: not among ``rows``)."""
    if rows is None:
        return None
    agg = aggregate(rows)
    return agg[(agg["head"] == "1d") & (agg["order"] == "random")]


def write_family(params: dict, preset: str, cfg: Config, family: str, files: dict[str, RunFiles],
                 noise_files: dict[str, RunFiles], floor_path: str | Path, out_dir: str | Path) -> dict:
    """The report of ``family`` on the runs of ``files``. A family without seed replicates of its
    own judges its differences with the seed noise of ``noise_files`` (Table 1's runs); the
    floor file gives the metric's noise at the runs' sample count."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family '{family}' (known: {', '.join(FAMILIES)})")
    if not files:
        raise ValueError(f"no runs given for family '{family}'")
    out_dir = Path(out_dir)
    rows = run_rows(files)
    extractor = rows["extractor"].iloc[0]
    agg = aggregate(rows)
    seed_rows = run_rows(noise_files) if noise_files else None
    floor = read_json(floor_path)
    noise, source = statements.family_noise(rows, seed_rows, floor, cfg.sample.num_samples)
    agg["n"] = [resolve(params, preset, v).train.supervision_density for v in agg["variant"]]
    paper_cols = paper_rows(family, preset, agg)
    table = family_table(agg, extractor, paper_cols)
    if family in ("fig7", "fig8"):
        table["n"] = list(agg["n"])
    if family == "fig7":
        table["w*n"] = list(agg["window"] * agg["n"])
    statement, verdict = {
        "table1": lambda: statements.order_statement(agg, paper_cols, "Table 1", noise),
        "table2": lambda: statements.table2_statement(preset, agg, paper_cols),
        "table4": lambda: statements.order_statement(agg, paper_cols, "Table 4", noise),
        "fig6": lambda: statements.tokens_statement(agg, {run: f.progress for run, f in files.items()}, floor,
                                                    noise, cfg.sample.progress_samples),
        "fig7": lambda: statements.window_statement(agg, noise),
        "fig8": lambda: statements.density_statement(agg, noise, one_d_random(seed_rows)),
    }[family]()
    title = TITLES[family] + seeds_note(agg["seeds"])
    png = out_dir / f"{family}.png"
    if family in CURVE_FAMILIES:
        plot_progress(rows, files, title, extractor, png)
    else:
        plot_bars(agg, title, extractor, png)
    with atomic_path(out_dir / f"{family}.csv") as tmp:
        table.to_csv(tmp, index=False)
    noise_line = (f"Noise used for the verdicts (seed SD from {source}; floor at {cfg.sample.num_samples} "
                  f"samples): " + "; ".join(f"{m.upper()}: {noise[m].describe()}" for m in ("fid", "nll")))
    points_line, points = statements.reference_points(floor, cfg.sample.num_samples)
    text = f"## {title}\n\n{statement}\n\n{noise_line}\n\n{points_line}\n\n{markdown(table)}\n"
    if family == "table2" and not any(paper_cols):
        ref = pd.DataFrame([{"model": k, "paper FID": v["fid"], "paper IS": v["is"]}
                            for k, v in {**paper.TABLE2, **paper.PEERS_TABLE2}.items()])
        text += f"\nThe paper's Table 2 (ImageNet 256, Inception, no CFG), for reference:\n\n{markdown(ref)}\n"
    if family == "table4":
        text += ("\nPaper columns: Heptapod-L w256n1 with depth 31/1, 24/8, 16/16 (total 32), matched by "
                 "the split's shape (one-layer head, 3:1, 1:1).\n")
    text += f"\n![{family}]({family}.png)\n"
    write_text(out_dir / f"{family}.md", text)
    keys = [k for m in METRICS for k in (m, f"{m}_sd")] + [
        "nll_se", "nll_order_sd", "params_M", "train_PFLOP", "seeds", "steps", "val_change_last_quarter"]
    metrics = {v: {k: num(line[k]) for k in keys} for v, line in zip(agg["variant"], agg.to_dict("records"))}
    write_json(out_dir / f"{family}.json", {
        "family": family, "title": TITLES[family], "statement": statement, "verdict": verdict,
        "noise": {m: {"seed_sd": noise[m].seed_sd, "floor_sd": noise[m].floor_sd} for m in METRICS},
        "rule": verdicts.RULE_TEXT, "reference_points": points, "variants": metrics,
        "paper": {v: p for v, p in zip(agg["variant"], paper_cols) if p},
        # which code scored each run and where it was trained: the page's own, for comparing it with
        # a rerun of this family alone (the preset's runs.csv is the whole report's, maybe older)
        "runs": {r["run"]: {"commit": r["commit"], "machine": r["machine"]} for r in rows.to_dict("records")},
        "provenance": provenance(preset, cfg.data.dataset, feature_extractor=extractor),
    })
    return {"family": family, "runs": len(files)}
