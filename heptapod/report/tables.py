"""How numbers are shown: cells, mean ± SD, markdown tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from heptapod.report.runs import MOVING


def fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (float, np.floating)):
        return f"{x:.4g}"
    return str(x)


def pm(mean: float, sd: float) -> str:
    return fmt(mean) if math.isnan(sd) else f"{mean:.4g} ± {sd:.2g}"


def num(x):
    """JSON-safe number: None or NaN (no spread with one seed, no KID without reference
    features) becomes null."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def moving_text(change: float) -> str:
    """The last-quarter change of the held-out score, marked where the run is still moving."""
    if math.isnan(change):
        return "–"
    return f"{change:.1%}" + (" (moving)" if abs(change) > MOVING else "")


def family_table(agg: pd.DataFrame, extractor: str, paper_cols: list[dict | None]) -> pd.DataFrame:
    t = pd.DataFrame({
        "variant": agg["variant"], "head": agg["head"], "order": agg["order"], "tokens": agg["tokens"],
        "w": agg["window"], "depth (backbone/head)": agg["depth"], "params (M)": agg["params_M"],
        "steps": agg["steps"], "train PFLOP": agg["train_PFLOP"], "seeds": agg["seeds"],
        f"FID ({extractor})": [pm(m, s) for m, s in zip(agg["fid"], agg["fid_sd"])],
        f"IS ({extractor})": [pm(m, s) for m, s in zip(agg["is"], agg["is_sd"])],
        f"KID ({extractor})": [pm(m, s) for m, s in zip(agg["kid"], agg["kid_sd"])],
        "precision": [pm(m, s) for m, s in zip(agg["precision"], agg["precision_sd"])],
        "recall": [pm(m, s) for m, s in zip(agg["recall"], agg["recall_sd"])],
        "NLL (bits/token, test)": [pm(m, s) for m, s in zip(agg["nll"], agg["nll_sd"])],
        "NLL SD over orders": list(agg["nll_order_sd"]),
        "held-out change, last quarter (max over seeds)": [moving_text(c) for c in agg["val_change_last_quarter"]],
    })
    if agg["dloss"].notna().any():  # not a likelihood: its own column
        t["val diffusion loss (not NLL)"] = [pm(m, s) for m, s in zip(agg["dloss"], agg["dloss_sd"])]
    if any(paper_cols):
        t["paper FID (ImageNet, Inception)"] = [p["fid"] if p else None for p in paper_cols]
        t["paper IS (ImageNet, Inception)"] = [p["is"] if p else None for p in paper_cols]
    return t


def tokenizer_table(toks: dict[str, dict]) -> str:
    lines = ["| tokenizer | rFID | MSE | PSNR (dB) | codes used | code perplexity | latent scale |",
             "|---|---|---|---|---|---|---|"]
    for k, t in toks.items():
        used = f"{t['codebook_used']} / {t['codebook_size']}" if "codebook_used" in t else "–"
        lines.append(f"| {k} | {t['rfid']:.4g} ({t['extractor']}) | {t['mse']:.4g} | {t['psnr']:.2f} | {used} | "
                     f"{fmt(t.get('codebook_perplexity'))} | {fmt(t.get('latent_scale'))} |")
    return "\n".join(lines)
