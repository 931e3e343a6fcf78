"""What the pipeline's files say about each run: one row per run, one line per variant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heptapod import paper
from heptapod.config import split_run
from heptapod.records import model_summary
from heptapod.utils.io import read_json
from heptapod.utils.training import read_log

METRICS = ("fid", "is", "kid", "precision", "recall", "nll", "dloss")
PER_IMAGE = "nll_per_image"  # each held-out image's NLL, for paired comparisons (not a table column)
MOVING = 0.01  # a run whose validation score moved more than this over its last quarter is still training


@dataclass(frozen=True)
class RunFiles:
    """The files of one run that a report reads (``progress``/``grid`` only where it shows them)."""

    metrics: Path  # FID / IS / KID of its samples
    likelihood: Path  # held-out NLL (or validation diffusion loss)
    model: Path  # the final checkpoint (or a record's summary of it): spec, steps, FLOPs
    log: Path  # the training log, with the validation points
    progress: Path | None = None  # FID of its snapshots
    grid: Path | None = None  # its sample grid


def run_files(runs: list[str], **lists: list[str] | None) -> dict[str, RunFiles]:
    """``RunFiles`` per run from lists aligned with ``runs`` (an empty or missing list: none of
    that kind); a list of another length is an error naming its flag."""
    for key, files in lists.items():
        if files and len(files) != len(runs):
            raise ValueError(f"--{key} names {len(files)} files for {len(runs)} runs ({' '.join(runs)})")
    return {run: RunFiles(**{k: Path(v[i]) if v else None for k, v in lists.items()})
            for i, run in enumerate(runs)}


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def run_row(run: str, files: RunFiles) -> dict:
    """Everything a table needs about one run, read from its files."""
    metrics = read_json(files.metrics)
    lik = read_json(files.likelihood)
    ckpt = model_summary(files.model)
    spec = ckpt["spec"]
    log = read_log(files.log)
    val = [r for r in log if "val_nll_bits" in r or "val_diffusion_loss" in r]
    variant, seed = split_run(run)
    window = {"global": spec["grid_size"] ** 2, "local": spec["window"], "1d": 1}[spec["head"]]
    return {
        "run": run, "variant": variant, "seed": seed, "head": spec["head"], "order": spec["order"],
        "tokens": spec.get("tokens", "discrete"), "window": window,
        "backbone_depth": spec["backbone_depth"], "head_depth": spec["head_depth"],
        "depth": f"{spec['backbone_depth']}/{spec['head_depth']}",
        "params_M": ckpt["num_params"] / 1e6, "steps": ckpt["steps"], "step_PFLOP": ckpt["step_flops"] / 1e15,
        "train_PFLOP": ckpt["train_flops"] / 1e15, "train_min": log[-1]["elapsed_s"] / 60,
        "fid": metrics["fid"], "is": metrics["is"], "kid": metrics["kid"],
        # scored since precision/recall were added (older metrics files: NaN, shown as –)
        "precision": _nan(metrics.get("precision")), "recall": _nan(metrics.get("recall")),
        "nll": _nan(lik.get("nll_bits_per_token")), "nll_se": _nan(lik.get("nll_bits_per_token_se")),
        "nll_order_sd": _nan(lik.get("nll_bits_per_token_order_sd")),
        "dloss": _nan(lik.get("val_diffusion_loss")), "heldout_images": lik["heldout_images"],
        PER_IMAGE: np.asarray(lik["nll_bits_per_token_per_image"], dtype=np.float64)
        if "nll_bits_per_token_per_image" in lik else None,
        **last_quarter_row(val, ckpt["steps"]),
        "extractor": metrics["extractor"], "samples": metrics["num_fake"], "reference": metrics["num_real"],
        "commit": metrics.get("commit", "unknown"),  # the code that evaluated this run
        # where it was trained, else evaluated (files written before either was recorded: unknown)
        "machine": ckpt.get("machine") or metrics.get("machine", "unknown"),
    }


def run_rows(files: dict[str, RunFiles]) -> pd.DataFrame:
    return pd.DataFrame([run_row(run, f) for run, f in files.items()])


def last_quarter(val: list[dict], steps: int) -> tuple[int, float, float] | None:
    """The step of the last validation point at or before 3/4 of training, the held-out score
    there and the score at the end; None without both points."""
    key = val_key(val)
    early = [r for r in val if r["step"] <= 0.75 * steps]
    if not early or val[-1]["step"] != steps or early[-1]["step"] == steps:
        return None
    return early[-1]["step"], early[-1][key], val[-1][key]


def val_key(val: list[dict]) -> str:
    """The held-out score a training log records: NLL, or the diffusion loss of continuous runs."""
    return "val_nll_bits" if val and "val_nll_bits" in val[0] else "val_diffusion_loss"


def last_quarter_change(val: list[dict], steps: int) -> float:
    """Relative change of the held-out score from the last validation point at or before 3/4 of
    training to the end (positive: still improving); NaN without two such points."""
    return last_quarter_row(val, steps)["val_change_last_quarter"]


def last_quarter_row(val: list[dict], steps: int) -> dict:
    """A run's held-out score at 3/4 of training and at the end (NaN without both points), how
    far it moved, and its relative change: where the run stands on the stopping rule, and what
    the margin trends read."""
    step, start, end = last_quarter(val, steps) or (-1, float("nan"), float("nan"))
    return {"val_change_last_quarter": (start - end) / abs(end), "val_key": val_key(val),
            "val_3q_step": step, "val_3q": start, "val_end": end, "val_move": end - start}


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per variant (in the rows' order): mean and standard deviation over its seeds
    (NaN for one seed), and the largest last-quarter change among its seeds."""
    out = []
    for v in dict.fromkeys(rows["variant"]):
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
        line[PER_IMAGE] = seed_mean_per_image(g.get(PER_IMAGE))
        line.update(val_key=first["val_key"], val_3q_step=int(first["val_3q_step"]),
                    val_3q=g["val_3q"].mean(), val_end=g["val_end"].mean())
        change = g["val_change_last_quarter"].abs()
        line["val_change_last_quarter"] = change.max() if change.notna().any() else float("nan")
        out.append(line)
    return pd.DataFrame(out)


def seed_mean_per_image(per_run) -> np.ndarray | None:
    """Each image's score averaged over a variant's seeds; None unless every seed has one per
    image on the same images."""
    arrays = [] if per_run is None else list(per_run)
    if not arrays or not all(isinstance(x, np.ndarray) for x in arrays) or len({x.shape for x in arrays}) > 1:
        return None
    return np.mean(arrays, axis=0)


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
