"""Do the verdicts survive a rerun, and do they hold on another data set?

The same commit rerun under other floating-point conditions (another thread count: a stand-in
for another machine) moves every number a little; a verdict that flips between the two runs is
not evidence, whatever the rule said in either of them. The same comparison between the
reports of two data sets says which of the paper's orderings hold on both.
"""

from __future__ import annotations

from pathlib import Path

from heptapod.utils.io import read_json, write_json, write_text

SCORES = ("fid", "nll")


def compare_families(first: dict, second: dict) -> dict:
    """Verdicts of one family in two runs of the pipeline, and how far each variant's scores moved."""
    verdicts = {k: {"first": first["verdict"].get(k), "second": second["verdict"].get(k),
                    "holds": first["verdict"].get(k) == second["verdict"].get(k)}
                for k in sorted(set(first["verdict"]) | set(second["verdict"]))}
    moved = {v: {m: {"first": first["variants"][v].get(m), "second": second["variants"][v].get(m)}
                 for m in SCORES}
             for v in first["variants"] if v in second["variants"]}
    return {"verdicts": verdicts, "variants": moved}


def _cell(x) -> str:
    return "–" if x is None else f"{x:.4g}"


INTROS = {
    "rerun": ("# Do the verdicts survive a rerun? `{first}` vs `{second}`",
              "The same commit and parameters, rerun with other thread counts (other floating-point "
              "reductions, a stand-in for another machine). **{held} of {total} verdicts hold.** A "
              "verdict that flips is not evidence: read it as **within noise**."),
    "dataset": ("# Which verdicts hold on both data sets? `{first}` vs `{second}`",
                "The same families, models and budget on two data sets; each verdict by the decision "
                "rule of its own report. **{held} of {total} verdicts are the same on both.** Only a "
                "verdict that agrees (or disagrees) with the paper on both says something beyond one "
                "data set."),
}


def stability_report(first_dir: str | Path, second_dir: str | Path, families: list[str],
                     out_md: str | Path, out_json: str | Path, kind: str = "rerun") -> dict:
    """``<name>.md``/``.json``: per family, each verdict in both reports and whether it holds,
    and each variant's FID and NLL in both (``kind``: 'rerun' or 'dataset', the wording)."""
    first_dir, second_dir = Path(first_dir), Path(second_dir)
    result = {f: compare_families(read_json(first_dir / f"{f}.json"), read_json(second_dir / f"{f}.json"))
              for f in families}
    rows = [(f, k, v) for f, r in result.items() for k, v in r["verdicts"].items()]
    held = sum(v["holds"] for _, _, v in rows)
    heading, intro = (t.format(first=first_dir.name, second=second_dir.name, held=held, total=len(rows))
                      for t in INTROS[kind])
    first, second = ("first run", "rerun") if kind == "rerun" else (first_dir.name, second_dir.name)
    lines = [heading, "", intro, "", f"| family | comparison | {first} | {second} | holds |", "|---|---|---|---|---|"]
    lines += [f"| {f} | {k} | {v['first']} | {v['second']} | {'yes' if v['holds'] else '**no**'} |"
              for f, k, v in rows]
    lines += ["", "Each variant's scores in both:", "",
              f"| family | variant | FID ({first}) | FID ({second}) | NLL ({first}) | NLL ({second}) |",
              "|---|---|---|---|---|---|"]
    for f, r in result.items():
        for v, s in r["variants"].items():
            lines.append(f"| {f} | {v} | {_cell(s['fid']['first'])} | {_cell(s['fid']['second'])} | "
                         f"{_cell(s['nll']['first'])} | {_cell(s['nll']['second'])} |")
    write_text(out_md, "\n".join(lines) + "\n")
    write_json(out_json, {"kind": kind, "first": str(first_dir), "second": str(second_dir), "held": held,
                          "verdicts": len(rows), "families": result})
    return {"held": held, "verdicts": len(rows)}
