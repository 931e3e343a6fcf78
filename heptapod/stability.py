"""Do the verdicts survive a rerun, another machine, and do they hold on another data set?

The same commit rerun under other floating-point conditions (another thread count, another
machine) moves every number a little; a verdict that flips between the two runs is not evidence,
whatever the rule said in either of them. The same comparison between the reports of two data
sets says which of the paper's orderings hold on both.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from heptapod.utils.io import read_json, write_json, write_text

SCORES = ("fid", "nll")


def compare_families(first: dict, second: dict) -> dict:
    """Verdicts of one family in two runs of the pipeline, and how far each variant's scores moved."""
    verdicts = {k: {"first": first["verdict"].get(k), "second": second["verdict"].get(k),
                    "holds": first["verdict"].get(k) == second["verdict"].get(k)}
                for k in sorted(set(first["verdict"]) | set(second["verdict"]))}
    moved = {v: {m: _move(first["variants"][v].get(m), second["variants"][v].get(m), _seed_sd(first, m))
                 for m in SCORES}
             for v in first["variants"] if v in second["variants"]}
    return {"verdicts": verdicts, "variants": moved}


def _seed_sd(family: dict, metric: str) -> float | None:
    """A family report's seed SD of one metric (None where unmeasured or not recorded)."""
    return family.get("noise", {}).get(metric, {}).get("seed_sd")


def _move(first: float | None, second: float | None, seed_sd: float | None) -> dict:
    """Both scores and how far the second moved, in the first report's seed SDs: a move of
    several seed SDs is a change in the conditions, not another draw of the same training."""
    in_sd = (abs(second - first) / seed_sd if None not in (first, second) and seed_sd else None)
    return {"first": first, "second": second, "moved_seed_sd": in_sd}


def _median_moves(result: dict) -> str:
    """Each score's median move in seed SDs over the distinct variants (a variant listed in several
    families counts once)."""
    parts = []
    for m, label in (("fid", "FID"), ("nll", "NLL")):
        moves = sorted({v: s[m]["moved_seed_sd"] for r in result.values() for v, s in r["variants"].items()
                        if s[m]["moved_seed_sd"] is not None}.values())
        parts.append(f"{label} {statistics.median(moves):.2f} seed SDs ({len(moves)} variants)" if moves
                     else f"{label} –")
    return ", ".join(parts)


def _cell(x) -> str:
    return "–" if x is None else f"{x:.4g}"


INTROS = {
    "rerun": ("# Do the verdicts survive a rerun? `{first}` vs `{second}`",
              "The same parameters, rerun with other thread counts (other floating-point "
              "reductions, a stand-in for another machine; which commits and machines made each is "
              "listed below). **{held} of {total} verdicts hold.** A verdict that flips is not "
              "evidence: read it as **within noise**."),
    "dataset": ("# Which verdicts hold on both data sets? `{first}` vs `{second}`",
                "The same families, models and budget on two data sets; each verdict by the decision "
                "rule of its own report. **{held} of {total} verdicts are the same on both.** Only a "
                "verdict that agrees (or disagrees) with the paper on both says something beyond one "
                "data set."),
    "machine": ("# Does another machine reproduce the report? `{first}` vs `{second}`",
                "The same preset and parameters run from a fresh clone on another machine (other "
                "floating-point results from the tokenizer on), each report judged by its own rule. "
                "**{held} of {total} verdicts hold.** A verdict that flips is not evidence: read it as "
                "**within noise**."),
}


def _provenance_line(label: str, folder: Path, families: list[dict]) -> str:
    """Which commit wrote the report and which commits its runs were evaluated at: from the family
    pages where each names its runs' (newer pages), else from the report's ``runs.csv``."""
    if all("runs" in f for f in families):
        rows = [r for f in families for r in f["runs"].values()]
    else:
        rows = list(csv.DictReader((folder / "runs.csv").open())) if (folder / "runs.csv").exists() else []
    evaluated = sorted({r["commit"] for r in rows})
    machines = sorted({r["machine"] for r in rows if r.get("machine", "unknown") != "unknown"})
    prov = families[0].get("provenance", {})
    return (f"- {label} (`{folder.name}`): report written at `{prov.get('commit', '?')}`"
            + (f", runs evaluated at {', '.join(f'`{c}`' for c in evaluated)}" if evaluated else "")
            + (f", trained on {'; '.join(machines)}" if machines else ""))


def extractor_split(runs: dict[str, tuple[dict, dict, dict]]) -> dict:
    """Each run's FID move between two runs of the pipeline, split in two. Per run: the first
    run's metrics (its samples, its classifier), the rerun's (its samples, its classifier) and the
    rerun's samples scored by the first run's classifier. With the classifier fixed, what moves
    is the generator side (tokenizer and generator retrained); the rest is the classifier's."""
    rows = {}
    for run, (first, second, fixed) in runs.items():
        rows[run] = {"first": first["fid"], "second": second["fid"], "second_first_extractor": fixed["fid"],
                     "by_extractor": second["fid"] - fixed["fid"], "by_generator": fixed["fid"] - first["fid"]}
    med = {k: statistics.median(abs(r[k]) for r in rows.values()) for k in ("by_extractor", "by_generator")}
    return {"runs": rows, "median_abs": med}


def _extractor_lines(split: dict, seed_sd: float | None) -> list[str]:
    med = split["median_abs"]
    sd = f" (the first report's FID seed SD: {seed_sd:.3g})" if seed_sd else ""
    lines = ["", "## Extractor or generator?", "",
             "FID is scored by a dataset classifier, which each run may train for itself. Scoring "
             "the rerun's samples with the first run's classifier splits each run's FID move in two: "
             "**by the generator side** (first run vs rerun samples, same classifier: the tokenizer and "
             "the generator retrained) and **by the extractor** (rerun samples, rerun classifier vs first "
             f"run's classifier). Median size of each over the runs: generator side {med['by_generator']:.3g}, "
             f"extractor {med['by_extractor']:.3g}{sd}.", "",
             "| run | FID (first run) | FID (rerun) | FID (rerun samples, first run's classifier) | "
             "moved by the generator side | moved by the extractor |", "|---|---|---|---|---|---|"]
    lines += [f"| {run} | {_cell(r['first'])} | {_cell(r['second'])} | {_cell(r['second_first_extractor'])} | "
              f"{r['by_generator']:+.3g} | {r['by_extractor']:+.3g} |" for run, r in split["runs"].items()]
    return lines


def stability_report(first_dir: str | Path, second_dir: str | Path, families: list[str],
                     out_md: str | Path, out_json: str | Path, kind: str = "rerun",
                     extractor: dict[str, tuple[dict, dict, dict]] | None = None) -> dict:
    """``<name>.md``/``.json``: per family, each verdict in both reports and whether it holds,
    and each variant's FID and NLL in both (``kind``: 'rerun', 'machine' or 'dataset', the wording);
    with ``extractor`` (run -> metrics of ``extractor_split``), each run's FID move split in two."""
    first_dir, second_dir = Path(first_dir), Path(second_dir)
    reports = {f: (read_json(first_dir / f"{f}.json"), read_json(second_dir / f"{f}.json")) for f in families}
    result = {f: compare_families(*pair) for f, pair in reports.items()}
    rows = [(f, k, v) for f, r in result.items() for k, v in r["verdicts"].items()]
    held = sum(v["holds"] for _, _, v in rows)
    heading, intro = (t.format(first=first_dir.name, second=second_dir.name, held=held, total=len(rows))
                      for t in INTROS[kind])
    first, second = {"rerun": ("first run", "rerun"), "machine": ("first machine", "second machine")}.get(
        kind, (first_dir.name, second_dir.name))
    lines = [heading, "", intro, ""]
    # two runs of one study (not two data sets): the same scale, so moves count in seed SDs, and
    # the runs may differ in commit and machine too, so say which made each
    same_data = kind != "dataset"
    if same_data:
        pages = list(zip(*reports.values()))
        lines += [_provenance_line(first, first_dir, list(pages[0])),
                  _provenance_line(second, second_dir, list(pages[1])), ""]
    lines += [f"| family | comparison | {first} | {second} | holds |", "|---|---|---|---|---|"]
    lines += [f"| {f} | {k} | {v['first']} | {v['second']} | {'yes' if v['holds'] else '**no**'} |"
              for f, k, v in rows]
    lines += ["", "Each variant's scores in both" + (", and how far each moved in the first report's seed "
              "standard deviations:" if same_data else ":"), ""]
    cols = [c for m in ("FID", "NLL")
            for c in [f"{m} ({first})", f"{m} ({second})"] + ([f"{m} moved (seed SDs)"] if same_data else [])]
    if same_data:
        lines += [f"Median move over the variants: {_median_moves(result)}.", ""]
    lines += [f"| family | variant | {' | '.join(cols)} |", "|---|---|" + "---|" * len(cols)]
    for f, r in result.items():
        for v, s in r["variants"].items():
            cells = [_cell(s[m][k]) for m in SCORES
                     for k in ("first", "second") + (("moved_seed_sd",) if same_data else ())]
            lines.append(f"| {f} | {v} | {' | '.join(cells)} |")
    split = extractor_split(extractor) if extractor else None
    if split:
        lines += _extractor_lines(split, _seed_sd(reports[families[0]][0], "fid"))
    write_text(out_md, "\n".join(lines) + "\n")
    write_json(out_json, {"kind": kind, "first": str(first_dir), "second": str(second_dir), "held": held,
                          "verdicts": len(rows), "families": result, "extractor_split": split})
    return {"held": held, "verdicts": len(rows)}
