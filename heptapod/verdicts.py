"""The decision rule: when a difference between two variants counts as real.

Two noise sources are measured by the pipeline itself:
- seed noise: the pooled standard deviation over seeds of variants trained with several seeds
  (everything random in a run follows its seed: initialisation, data order, orders, samples);
- metric noise: the standard deviation of FID / IS / KID between draws of *real* images at the
  runs' sample count (the noise floor), i.e. what two perfect generators would differ by.

Rule: a difference between two variants' means counts when it exceeds twice the larger of the
two (for NLL, which has no floor, twice the larger of the seed SD and the standard error of the
difference over held-out images). Every run is scored on the same images (and random-order runs
on the same orders), so that standard error is paired: taken over the per-image differences,
where how hard an image is cancels out. Anything smaller is reported as **within noise**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

LOWER_IS_BETTER = {"fid": True, "kid": True, "nll": True, "is": False, "dloss": True,
                   "attention_distance": False, "probe_accuracy": False}  # analyses: more global, more separable
RULE_TEXT = ("A difference between two variants counts as real when it exceeds 2 x max(seed SD, "
             "floor SD): the seed SD pooled over the variants trained with several seeds, the floor SD "
             "the spread of the metric between draws of real images at the same sample count (for "
             "NLL: 2 x max(seed SD, standard error of the difference over held-out images, paired image by "
             "image since every run is scored on the same images and orders)). Smaller differences are "
             "**within noise**.")


def pooled_sd(values_by_variant: list[np.ndarray]) -> float | None:
    """Pooled standard deviation over groups (variants) with >= 2 values; None if there are none."""
    groups = [np.asarray(v, dtype=np.float64) for v in values_by_variant]
    groups = [g[~np.isnan(g)] for g in groups]
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    if dof == 0:
        return None
    return math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups if len(g) > 1) / dof)


def paired_se(a, b) -> float | None:
    """Standard error of the mean per-image difference of two runs' held-out scores on the same
    images; None unless both are arrays of the same length (>= 2)."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.shape != b.shape or a.size < 2:
        return None
    d = a - b
    return float(d.std(ddof=1) / math.sqrt(d.size))


def seed_noise(rows: pd.DataFrame, metrics: tuple[str, ...]) -> dict[str, float | None]:
    """Pooled seed SD of each metric over the variants of ``rows`` (one row per run)."""
    return {m: pooled_sd([g[m].to_numpy(dtype=np.float64) for _, g in rows.groupby("variant")])
            if m in rows else None for m in metrics}


@dataclass(frozen=True)
class Noise:
    """The noise a metric's difference is judged against."""

    seed_sd: float | None
    floor_sd: float | None

    def threshold(self, extra_sd: float = 0.0) -> float | None:
        parts = [x for x in (self.seed_sd, self.floor_sd, extra_sd) if x]
        return 2 * max(parts) if parts else None

    def describe(self) -> str:
        seed = "unmeasured" if self.seed_sd is None else f"{self.seed_sd:.3g}"
        floor = "–" if self.floor_sd is None else f"{self.floor_sd:.3g}"
        return f"seed SD {seed}, floor SD {floor}"


def compare(better: float, worse: float, metric: str, threshold: float | None) -> str:
    """'agrees' when ``better`` (the variant the paper ranks first) is ahead by more than the
    threshold, 'disagrees' when it is behind by more, else 'within noise' (also when the noise is
    unmeasured: then nothing can be decided)."""
    if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in (better, worse)) or threshold is None:
        return "within noise"
    gain = (worse - better) if LOWER_IS_BETTER[metric] else (better - worse)
    if gain > threshold:
        return "agrees"
    if gain < -threshold:
        return "disagrees"
    return "within noise"


def combine(verdicts: list[str]) -> str:
    """A family's verdict: disagrees if any comparison disagrees, agrees if all agree."""
    if not verdicts:
        return "within noise"
    if "disagrees" in verdicts:
        return "disagrees"
    return "agrees" if all(v == "agrees" for v in verdicts) else "within noise"
