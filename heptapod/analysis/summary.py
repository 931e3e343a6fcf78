"""One number per run -> mean ± SD per variant, and the paper-direction verdicts between
variants by the report's decision rule (``heptapod.verdicts``)."""

from __future__ import annotations

import numpy as np

from heptapod import verdicts
from heptapod.config import split_run
from heptapod.report.tables import fmt


def _groups(values: dict[str, float]) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = {}
    for run, v in values.items():
        groups.setdefault(split_run(run)[0], []).append(float(v))
    return groups


def by_variant(values: dict[str, float]) -> dict[str, dict]:
    """run -> value  to  variant -> {mean, sd (None for one seed), seeds}."""
    groups = _groups(values)
    return {v: {"mean": float(np.mean(x)), "sd": float(np.std(x, ddof=1)) if len(x) > 1 else None,
                "seeds": len(x)} for v, x in groups.items()}


def judge_pairs(values: dict[str, float], pairs: list[tuple[str, str]], metric: str,
                floor_sd: float | None = None) -> tuple[float | None, list[dict]]:
    """Each (expected better, expected worse) pair of variants judged on ``metric``: 'agrees'
    when the first is ahead by more than 2 x max(pooled seed SD, ``floor_sd``). Pairs naming
    a variant without runs are left out."""
    groups = _groups(values)
    seed_sd = verdicts.pooled_sd([np.array(x) for x in groups.values()])
    threshold = verdicts.Noise(seed_sd, floor_sd).threshold()
    out = []
    for better, worse in pairs:
        if better in groups and worse in groups:
            a, b = float(np.mean(groups[better])), float(np.mean(groups[worse]))
            out.append({"better": better, "worse": worse, "values": [a, b], "threshold": threshold,
                        "verdict": verdicts.compare(a, b, metric, threshold)})
    return seed_sd, out


def verdict_lines(judged: list[dict], what: str) -> list[str]:
    """One markdown line per judged pair."""
    return [f"- {what}: {j['better']} {fmt(j['values'][0])} vs {j['worse']} {fmt(j['values'][1])} "
            f"(threshold {fmt(j['threshold'])}): **{j['verdict']}**" for j in judged]
