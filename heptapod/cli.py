"""Command line: one subcommand per pipeline stage (the Snakemake rules call exactly these).

Every subcommand takes ``--params`` / ``--preset`` (and ``--variant`` where it applies) and
explicit input and output paths; the paths the workflow uses are built in ``heptapod.paths``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from heptapod.config import ConfigError, load_config, load_params, params_schema, preset_names
from heptapod.data.store import StoreError
from heptapod.utils.io import CheckpointError, git_commit, write_json

log = logging.getLogger("heptapod")
GPU_STAGES = {"train", "sample", "progress", "extract-latents", "bench"}


def _common(p: argparse.ArgumentParser, variant: bool = False) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--preset", default=None, help="preset name (default: the file's 'preset')")
    if variant:
        p.add_argument("--variant", default=None, help="ablation variant (a key of 'variants')")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: params)")


def _provenance(args, cfg) -> dict:
    return {"preset": args.preset, "variant": getattr(args, "variant", None), "commit": git_commit(),
            "dataset": cfg.data.dataset, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def cmd_prepare(args, cfg) -> dict:
    from heptapod.data.images import prepare

    return prepare(cfg.data, args.split, args.out)


def cmd_train_classifier(args, cfg) -> dict:
    from heptapod.data.images import load_images
    from heptapod.evaluation.fidelity import train_classifier

    train_x, train_y, attrs = load_images(args.train)
    test_x, test_y, _ = load_images(args.test)
    out = train_classifier(cfg.classifier, (train_x, train_y), (test_x, test_y),
                           attrs["num_classes"], args.out)
    write_json(args.metrics, {**out, **_provenance(args, cfg)})
    return out


def cmd_train_tokenizer(args, cfg) -> dict:
    from heptapod.tokenizers.stage import train_tokenizer

    return train_tokenizer(cfg, args.kind, args.images, args.out)


def cmd_evaluate_tokenizer(args, cfg) -> dict:
    from heptapod.evaluation.stage import evaluate_tokenizer

    out = evaluate_tokenizer(cfg, args.tokenizer, args.images, args.classifier, args.png)
    write_json(args.out, {**out, **_provenance(args, cfg)})
    return out


def cmd_extract_latents(args, cfg) -> dict:
    from heptapod.tokenizers.stage import extract_latents

    return extract_latents(cfg, args.tokenizer, args.images, args.out)


def cmd_train(args, cfg) -> dict:
    from heptapod.train import train

    return train(cfg, args.latents, args.out_dir, max_steps=args.max_steps)


def cmd_sample(args, cfg) -> dict:
    from heptapod.sample import sample_stage

    from heptapod.utils.device import resolve_device

    return sample_stage(cfg.sample, args.model, args.tokenizer, args.out, args.grid,
                        resolve_device(cfg.workflow.device))


def cmd_evaluate(args, cfg) -> dict:
    from heptapod.evaluation.stage import evaluate_samples

    out = evaluate_samples(cfg, args.samples, args.real, args.classifier, args.classifier_metrics)
    write_json(args.out, {**out, **_provenance(args, cfg)})
    return out


def cmd_progress(args, cfg) -> dict:
    from heptapod.evaluation.stage import evaluate_progress

    rows = evaluate_progress(cfg, args.train_dir, args.tokenizer, args.real, args.classifier)
    write_json(args.out, {"progress": rows, **_provenance(args, cfg)})
    return {"checkpoints": len(rows), "fid": [round(r["fid"], 3) for r in rows]}


def cmd_reference_stats(args, cfg) -> dict:
    import numpy as np

    from heptapod.data.images import load_images
    from heptapod.evaluation.fidelity import reference_statistics
    from heptapod.utils.io import atomic_path

    images, _, _ = load_images(args.images)
    stats = reference_statistics(images, cfg.evaluate, args.classifier)
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mu=stats["mu"], sigma=stats["sigma"])
    return {"images": stats["images"], "extractor": stats["extractor"], "dim": len(stats["mu"])}


def cmd_export_npz(args, cfg) -> dict:
    from heptapod.sample import export_npz

    return export_npz(args.samples, args.out)


def cmd_report(args, cfg) -> dict:
    from heptapod.report import write_report

    return write_report(args.params, args.preset, cfg, args.out_dir)


def cmd_publish(args, cfg) -> dict:
    """Copy a finished report to the folder DVC owns (DVC never claims Snakemake's outputs)."""
    from heptapod.utils.io import atomic_path

    src, dst = Path(args.src), Path(args.out_dir)
    files = sorted(p for p in src.iterdir() if p.is_file())
    if not (src / "metrics.json").is_file():
        raise FileNotFoundError(f"no finished report in {src} (missing metrics.json)")
    for file in files:
        with atomic_path(dst / file.name) as tmp:
            tmp.write_bytes(file.read_bytes())
    return {"published": [f.name for f in files], "to": str(dst)}


def cmd_index(args, cfg) -> dict:
    from heptapod.report import write_index

    return write_index(args.report, args.out)


def cmd_bench(args, cfg) -> dict:
    from heptapod.bench import run_bench

    out = run_bench(cfg, args.latents)
    write_json(args.out, {**out, **_provenance(args, cfg)})
    return out


def cmd_schema(args, cfg) -> dict:
    import yaml

    text = ("# Generated by `heptapod schema --write` from heptapod/config.py; do not edit.\n"
            + yaml.safe_dump(params_schema(), sort_keys=False, width=100))
    path = Path(args.path)
    if args.check:
        if not path.is_file() or path.read_text() != text:
            raise ConfigError(f"{path} is out of date: run `heptapod schema --write`")
        return {"schema": "up to date"}
    if args.write:
        path.write_text(text)
        return {"schema": str(path)}
    print(text)
    return {}


def cmd_model_params(args, cfg) -> dict:
    from heptapod.models.summary import format_table, parameter_table, spec_for

    rows = parameter_table(spec_for(cfg, args.num_classes))
    print(format_table(rows))
    return {"total": rows[-1][1]}


def cmd_params(args, cfg) -> dict:
    print(json.dumps(dataclasses.asdict(cfg), indent=2))
    return {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heptapod", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_, variant=False):
        p = sub.add_parser(name, help=help_)
        _common(p, variant)
        p.set_defaults(func=func)
        return p

    p = add("prepare", cmd_prepare, "read a dataset split into an HDF5 image store")
    p.add_argument("--split", required=True, choices=["train", "test"])
    p.add_argument("--out", required=True)
    p = add("train-classifier", cmd_train_classifier, "train the dataset classifier (FID/IS features)")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", required=True)
    p = add("train-tokenizer", cmd_train_tokenizer, "train a tokenizer (VQ or KL VAE)")
    p.add_argument("--kind", required=True, choices=["vq", "kl"])
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    p = add("evaluate-tokenizer", cmd_evaluate_tokenizer, "reconstruction MSE/PSNR, codebook use, rFID")
    for a in ("--tokenizer", "--images", "--classifier", "--out", "--png"):
        p.add_argument(a, required=True)
    p = add("extract-latents", cmd_extract_latents, "encode a split (and its flip) to an HDF5 latent store")
    for a in ("--tokenizer", "--images", "--out"):
        p.add_argument(a, required=True)
    p = add("train", cmd_train, "train (or resume) a generator", variant=True)
    p.add_argument("--latents", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this step (resume later)")
    p = add("sample", cmd_sample, "generate class-balanced samples and a PNG grid", variant=True)
    for a in ("--model", "--tokenizer", "--out", "--grid"):
        p.add_argument(a, required=True)
    p = add("evaluate", cmd_evaluate, "FID / IS / KID of samples with torch-fidelity", variant=True)
    for a in ("--samples", "--real", "--classifier", "--classifier-metrics", "--out"):
        p.add_argument(a, required=True)
    p = add("progress", cmd_progress, "FID / IS / KID of a run's snapshots (metrics vs training)",
            variant=True)
    for a in ("--train-dir", "--tokenizer", "--real", "--classifier", "--out"):
        p.add_argument(a, required=True)
    p = add("reference-stats", cmd_reference_stats, "FID statistics (mu, sigma) of an image store, as an npz")
    p.add_argument("--images", required=True)
    p.add_argument("--classifier", default=None, help="dataset classifier (when no Inception weights)")
    p.add_argument("--out", required=True)
    p = add("export-npz", cmd_export_npz, "samples as an ADM-style npz (arr_0 NHWC uint8, arr_1 labels)")
    p.add_argument("--samples", required=True)
    p.add_argument("--out", required=True)
    p = add("report", cmd_report, "tables, plots and README of a preset's results")
    p.add_argument("--out-dir", required=True)
    p = add("index", cmd_index, "write results/README.md from a preset's report")
    p.add_argument("--report", required=True)
    p.add_argument("--out", required=True)
    p = add("publish", cmd_publish, "copy a finished report into the DVC-owned folder")
    p.add_argument("--src", required=True)
    p.add_argument("--out-dir", required=True)
    p = add("bench", cmd_bench, "training/sampling/loader throughput, written as JSON")
    p.add_argument("--latents", required=True)
    p.add_argument("--out", required=True)
    p = add("schema", cmd_schema, "print, write or check the params JSON schema")
    p.add_argument("--path", default="workflow/schemas/params.schema.yaml")
    p.add_argument("--write", action="store_true")
    p.add_argument("--check", action="store_true")
    add("params", cmd_params, "print the resolved parameters of a preset/variant", variant=True)
    p = add("model-params", cmd_model_params, "per-module parameter table of a preset's generator "
            "(meta device: no memory needed)", variant=True)
    p.add_argument("--num-classes", type=int, default=1000, help="class count (default 1000, ImageNet)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        params = load_params(args.params)
        args.preset = args.preset or params["preset"]
        if args.preset not in preset_names(params):
            raise ConfigError(f"unknown preset '{args.preset}' (known: {', '.join(preset_names(params))})")
        cfg = load_config(args.params, args.preset, getattr(args, "variant", None))
        from heptapod.utils.training import set_threads

        set_threads(args.threads if args.threads is not None else cfg.workflow.threads)
        from heptapod.utils.gpus import gpu_slot_from_env

        t0 = time.perf_counter()
        # GPU stages take a device of the HEPTAPOD_GPUS pool (when set) for their lifetime
        with gpu_slot_from_env() if args.command in GPU_STAGES else contextlib.nullcontext():
            result = args.func(args, cfg)
        if result:
            log.info("%s done in %.1f s: %s", args.command, time.perf_counter() - t0,
                     json.dumps(result, default=str))
        return 0
    except (ConfigError, CheckpointError, StoreError, FileNotFoundError, ValueError,
            FloatingPointError) as exc:
        print(f"heptapod {args.command}: error: {exc}", file=sys.stderr)
        return 2
