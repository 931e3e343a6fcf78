"""Speed against quality of parallel decoding: the headline 2D run sampled with k positions per
step (one head call fills k), FID/IS/KID and images/s for each k, the 1D baselines' images/s
beside them. A quality change counts only beyond the report's noise (seed SD and floor SD).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from heptapod.config import Config  # noqa: E402
from heptapod.evaluation.fidelity import fidelity_metrics  # noqa: E402
from heptapod.sample import balanced_labels, generate  # noqa: E402
from heptapod.tokenizers.stage import load_tokenizer  # noqa: E402
from heptapod.train import load_generator  # noqa: E402
from heptapod.utils.device import resolve_device  # noqa: E402
from heptapod.utils.io import atomic_path, read_json, write_json, write_text  # noqa: E402
from heptapod.verdicts import Noise, compare  # noqa: E402


def timed_generate(model, tokenizer, labels: torch.Tensor, cfg) -> tuple[np.ndarray, float]:
    """Images and images/s (token sampling and decoding, as a user of the sampler sees it)."""
    t0 = time.perf_counter()
    images = generate(model, tokenizer, labels, cfg)
    return images, len(images) / (time.perf_counter() - t0)


def speed_curve(cfg: Config, model_path: str | Path, baselines: dict[str, str | Path], tokenizer_path: str | Path,
                real: np.ndarray | None, classifier_path: str | Path | None, noise: dict) -> dict:
    """FID/IS/KID and images/s of ``model_path`` at each k of ``evaluate.speed_positions``, and the
    images/s of each baseline (one position per step) on one sampling batch."""
    device = resolve_device(cfg.workflow.device)
    tokenizer = load_tokenizer(tokenizer_path).to(device)
    model = load_generator(model_path, cfg.sample.use_ema).to(device)
    labels = balanced_labels(cfg.sample.num_samples, model.spec.num_classes)
    rows = []
    for k in cfg.evaluate.speed_positions:
        images, rate = timed_generate(model, tokenizer, labels,
                                      dataclasses.replace(cfg.sample, positions_per_step=k, steps=None))
        m = fidelity_metrics(images, real, cfg.evaluate, classifier_path)
        rows.append({"k": k, "head_calls": -(-model.spec.num_positions // k), "images_per_s": rate,
                     **{x: m[x] for x in ("fid", "is", "kid")}})
    thr = Noise(noise.get("seed_sd"), noise.get("floor_sd")).threshold()
    for r in rows:  # quality relative to k = 1: 'agrees' would mean k = 1 is better beyond noise
        lost = compare(rows[0]["fid"], r["fid"], "fid", thr)
        r["fid_vs_k1"] = {"agrees": "worse", "disagrees": "better", "within noise": "within noise"}[lost]
        r["speedup"] = r["images_per_s"] / rows[0]["images_per_s"]
    small = labels[:cfg.sample.batch_size]
    base = {}
    for name, path in baselines.items():
        base_model = load_generator(path, cfg.sample.use_ema).to(device)
        base[name] = timed_generate(base_model, tokenizer, small, dataclasses.replace(cfg.sample, steps=None,
                                                                                      positions_per_step=1))[1]
    return {"rows": rows, "baselines_images_per_s": base, "fid_threshold": thr, "samples": len(labels),
            "extractor": m["extractor"],
            "device": str(device), "threads": torch.get_num_threads()}


def write_speed(result: dict, run: str, out_json: str | Path, out_md: str | Path, out_png: str | Path) -> None:
    rows, extractor = result["rows"], result["extractor"]
    lines = [f"## Parallel decoding: `{run}` with k positions per step", "",
             f"{result['samples']} samples per k on {result['device']} ({result['threads']} threads); "
             f"a FID change counts beyond {result['fid_threshold']:.3g} (2 x max(seed SD, floor SD)).", "",
             f"| k | head calls per image | images/s | speed-up | FID ({extractor}) | IS | KID | FID vs k = 1 |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['k']} | {r['head_calls']} | {r['images_per_s']:.3g} | {r['speedup']:.2f}x | {r['fid']:.4g} | "
              f"{r['is']:.4g} | {r['kid']:.4g} | {r['fid_vs_k1']} |" for r in rows]
    if result["baselines_images_per_s"]:
        lines += ["", "One position per step (the 1D baselines cannot fill more): " + ", ".join(
            f"`{n}` {v:.3g} images/s" for n, v in result["baselines_images_per_s"].items()) + "."]
    lines += ["", "![speed](speed.png)"]
    write_text(out_md, "\n".join(lines) + "\n")
    write_json(out_json, {"run": run, **result})
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["images_per_s"] for r in rows], [r["fid"] for r in rows], "-o")
    for r in rows:
        ax.annotate(f"k={r['k']}", (r["images_per_s"], r["fid"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("images/s")
    ax.set_ylabel(f"FID ({extractor})")
    ax.set_title(f"{run}: speed vs quality of k positions per step")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def family_fid_noise(family_json: str | Path) -> dict:
    """Seed and floor SD of FID that a family's report judged its verdicts with."""
    return read_json(family_json)["noise"]["fid"]
