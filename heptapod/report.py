"""Report stage: the preset's tables (markdown + CSV + JSON), plots and a README to read.

Everything here is read from files the pipeline wrote; the paper's numbers come from
``heptapod.paper`` and are always labelled as the paper's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from heptapod import paper, paths  # noqa: E402
from heptapod.config import Config  # noqa: E402
from heptapod.utils.io import atomic_path, git_commit, load_checkpoint, read_json, write_json, write_text  # noqa: E402
from heptapod.utils.training import read_log  # noqa: E402


def collect(preset: str, cfg: Config) -> pd.DataFrame:
    rows = []
    for variant in cfg.workflow.variants:
        metrics = read_json(paths.eval_metrics(preset, variant))
        ckpt = load_checkpoint(paths.model(preset, variant), "generator")
        spec = ckpt["spec"]
        rows.append({
            "variant": variant, "head": spec["head"], "order": spec["order"],
            "depth (backbone/head)": f"{spec['backbone_depth']}/{spec['head_depth']}",
            "params_M": ckpt["num_params"] / 1e6, "steps": ckpt["steps"],
            "fid": metrics["fid"], "is": metrics["is"], "kid": metrics["kid"],
            "extractor": metrics["extractor"], "samples": metrics["num_fake"],
            "reference images": metrics["num_real"],
            "paper_fid": paper.TABLE1.get(variant, {}).get("fid"),
            "paper_is": paper.TABLE1.get(variant, {}).get("is"),
        })
    return pd.DataFrame(rows)


def plot_training(preset: str, cfg: Config, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in cfg.workflow.variants:
        log = pd.DataFrame(read_log(paths.train_log(preset, variant)))
        ax.plot(log["step"], log["loss"], label=variant, alpha=0.4)
        ax.plot(log["step"], log["loss"].rolling(10, min_periods=1).mean(), color=ax.lines[-1].get_color())
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy on masked slots (nats)")
    ax.set_title(f"Training loss, preset '{preset}'")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and pd.isna(x)):
        return "–"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_report(params_path: str, preset: str, cfg: Config, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    df = collect(preset, cfg)
    tok = read_json(paths.tokenizer_metrics(preset))
    clf = read_json(paths.classifier_metrics(preset))
    extractor = df["extractor"].iloc[0]
    label = f"FID ({extractor})"
    table = df.rename(columns={"fid": label, "is": f"IS ({extractor})", "kid": f"KID ({extractor})",
                               "paper_fid": "paper FID (Inception, ImageNet 256)",
                               "paper_is": "paper IS (Inception, ImageNet 256)"})
    with atomic_path(out_dir / "metrics.csv") as tmp:
        table.to_csv(tmp, index=False)
    provenance = {"preset": preset, "commit": git_commit(), "dataset": cfg.data.dataset,
                  "feature_extractor": extractor,
                  "classifier_test_accuracy": clf["test_accuracy"]}
    write_json(out_dir / "metrics.json", {
        "provenance": provenance,
        "generators": {r["variant"]: {"fid": r["fid"], "is": r["is"], "kid": r["kid"],
                                      "params_M": r["params_M"]} for r in df.to_dict("records")},
        "tokenizer": {k: tok[k] for k in ("rfid", "mse", "psnr", "codebook_used", "codebook_perplexity")},
    })
    plot_training(preset, cfg, out_dir / "training_curve.png")
    for variant in cfg.workflow.variants:
        shutil.copyfile(paths.sample_grid(preset, variant), out_dir / f"samples_{variant}.png")
    shutil.copyfile(paths.tokenizer_recon(preset), out_dir / "tokenizer_recon.png")
    grid = cfg.data.image_size // cfg.tokenizer.downsample
    text = f"""# Results: preset `{preset}`

Produced by `snakemake --cores all ablations --config preset={preset}` (equivalently
`dvc repro`); every number below was written by the pipeline. Do not edit by hand.

## Provenance
| key | value |
|---|---|
| preset | `{preset}` |
| commit | `{provenance['commit']}` |
| dataset | {cfg.data.dataset} ({cfg.data.image_size}x{cfg.data.image_size}, {cfg.data.channels} channel(s)) |
| tokenizer | VQ, {tok['codebook_size']} codes, {grid}x{grid} grid (N = {grid * grid}) |
| feature extractor | {extractor}; classifier test accuracy {clf['test_accuracy']:.4f} |
| samples / reference | {int(df['samples'].iloc[0])} generated (class-balanced) vs {int(df['reference images'].iloc[0])} held-out test images |

## Generators
{markdown_table(table)}

FID/IS/KID computed by torch-fidelity with the **{extractor}** as feature extractor: they are
comparable across rows of this table, not with the paper's Inception numbers on ImageNet, which
stand beside ours only as the reference point (paper: {paper.SOURCE}).

## Tokenizer
| rFID ({tok['extractor']}) | MSE | PSNR (dB) | codes used | code perplexity |
|---|---|---|---|---|
| {tok['rfid']:.4g} | {tok['mse']:.4g} | {tok['psnr']:.2f} | {tok['codebook_used']} / {tok['codebook_size']} | {tok['codebook_perplexity']:.1f} |

Reconstructions (odd rows: test images; even rows: reconstructions):

![reconstructions](tokenizer_recon.png)

## Training curve
![training curve](training_curve.png)

## Samples (one row per class)
""" + "\n".join(f"### {v}\n![samples {v}](samples_{v}.png)\n" for v in cfg.workflow.variants)
    write_text(out_dir / "README.md", text)
    return {"report": str(out_dir / "README.md"), "variants": list(df["variant"])}
