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
import os
import subprocess
import sys
import time
from pathlib import Path

from heptapod.config import FAMILIES, ConfigError, load_config, load_params, params_schema, preset_names
from heptapod.data.store import StoreError
from heptapod.utils.io import CheckpointError, git_commit, read_json, write_json

log = logging.getLogger("heptapod")
# stages that take a HEPTAPOD_GPUS device
GPU_STAGES = {"train", "sample", "progress", "likelihood", "noise-floor", "speed", "extract-latents", "evaluate",
              "evaluate-tokenizer", "bench"}


def _common(p: argparse.ArgumentParser, variant: bool = False) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--preset", default=None, help="preset name (default: the file's 'preset')")
    if variant:
        p.add_argument("--variant", default=None, help="ablation variant (a key of 'variants')")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")


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
    from heptapod.tokenizers.stage import import_published, train_tokenizer

    if args.published:
        return import_published(args.kind, args.published, args.out, cfg.tokenizer.width)
    if not args.images:
        raise ConfigError("train-tokenizer needs --images (a train split) or --published (a checkpoint)")
    return train_tokenizer(cfg, args.kind, args.images, args.out)


def cmd_evaluate_tokenizer(args, cfg) -> dict:
    from heptapod.evaluation.stage import evaluate_tokenizer

    out = evaluate_tokenizer(cfg, args.tokenizer, args.images, args.classifier, args.png)
    write_json(args.out, {**out, **_provenance(args, cfg)})
    return out


def cmd_extract_latents(args, cfg) -> dict:
    from heptapod.tokenizers.stage import extract_latents
    from heptapod.utils.device import resolve_device

    return extract_latents(cfg, args.tokenizer, args.images, args.out, args.shard, args.shards,
                           resolve_device(cfg.workflow.device))


def cmd_merge_latents(args, cfg) -> dict:
    from heptapod.tokenizers.stage import merge_latents

    return merge_latents(args.parts, args.out, cfg.latents.chunk_rows)


def cmd_train(args, cfg) -> dict:
    if args.nproc > 1 and not under_torchrun():
        return launch_ddp(args.nproc, args.argv)
    from heptapod.train import train

    return train(cfg, args.latents, args.out_dir, max_steps=args.max_steps, val_latents=args.val_latents,
                 restart_stale=args.restart_stale)


class LaunchError(RuntimeError):
    """The processes of a multi-GPU run failed (their own output says why)."""


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def launch_ddp(nproc: int, argv: list[str]) -> dict:
    """Run this same command under torchrun, one process per GPU (DDP on one node)."""
    # the processes need no --nproc, and torchrun's own parser would take it for --nproc-per-node
    own = [a for i, a in enumerate(argv) if not (a.startswith("--nproc") or (i and argv[i - 1] == "--nproc"))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "heptapod", *own]
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    if subprocess.run(cmd).returncode:
        raise LaunchError(f"torchrun with {nproc} processes failed (see the log above)")
    return {"processes": nproc}


def cmd_sample(args, cfg) -> dict:
    from heptapod.sample import sample_shard
    from heptapod.utils.device import resolve_device

    return sample_shard(cfg.sample, args.model, args.tokenizer, args.out, args.shard, args.shards,
                        resolve_device(cfg.workflow.device))


def cmd_merge_samples(args, cfg) -> dict:
    from heptapod.sample import merge_samples

    return merge_samples(args.parts, args.out, args.grid, cfg.sample.grid_rows)


def cmd_export_samples(args, cfg) -> dict:
    from heptapod.sample import export_samples

    return export_samples(args.samples, args.npz, args.png_dir)


def cmd_evaluate(args, cfg) -> dict:
    from heptapod.evaluation.stage import evaluate_samples

    out = evaluate_samples(cfg, args.samples, args.real, args.classifier, args.classifier_metrics)
    write_json(args.out, {**out, **_provenance(args, cfg)})
    return out


def cmd_likelihood(args, cfg) -> dict:
    from heptapod.evaluation.likelihood import heldout_likelihood
    from heptapod.train import load_generator
    from heptapod.utils.device import resolve_device

    ev = cfg.evaluate
    model = load_generator(args.model, cfg.sample.use_ema).to(resolve_device(cfg.workflow.device))
    out = heldout_likelihood(model, args.latents, ev.nll_images, ev.nll_orders, ev.nll_batch_size)
    write_json(args.out, {**out, "weights": "EMA" if cfg.sample.use_ema else "training", **_provenance(args, cfg)})
    return {k: v for k, v in out.items() if not k.endswith("by_order")}


def cmd_noise_floor(args, cfg) -> dict:
    from heptapod.evaluation.stage import noise_floor

    out = noise_floor(cfg, args.train, args.real, args.classifier)
    write_json(args.out, {**out, **_provenance(args, cfg)})
    return {str(k): v["fid_sd"] for k, v in out["by_count"].items()}


def cmd_speed(args, cfg) -> dict:
    from heptapod.evaluation.speed import family_fid_noise, speed_curve, write_speed
    from heptapod.evaluation.stage import reference_images

    baselines = dict(b.split("=", 1) for b in args.baseline)
    noise = family_fid_noise(args.noise_from) if args.noise_from else {}
    result = speed_curve(cfg, args.model, baselines, args.tokenizer, reference_images(cfg, args.real),
                         args.classifier, noise)
    out = Path(args.out_dir)
    write_speed(result, args.variant or "", out / "speed.json", out / "speed.md", out / "speed.png")
    return {f"k={r['k']}": f"{r['images_per_s']:.3g} img/s, FID {r['fid']:.4g}" for r in result["rows"]}


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


def cmd_report_family(args, cfg) -> dict:
    from heptapod.report import write_family

    return write_family(args.params, args.preset, cfg, args.family, args.out_dir)


def cmd_report(args, cfg) -> dict:
    from heptapod.report import write_report

    return write_report(args.params, args.preset, cfg, args.out_dir)


def cmd_publish(args, cfg) -> dict:
    """Copy a finished report (or one family of it) to the folder DVC owns (DVC never claims
    Snakemake's outputs)."""
    from heptapod.utils.io import atomic_path

    src, dst = Path(args.src), Path(args.out_dir)
    stem = args.family or "metrics"
    if not (src / f"{stem}.json").is_file():
        raise FileNotFoundError(f"no finished report in {src} (missing {stem}.json)")
    # a family's files, or the README and what it shows besides the families (each DVC output
    # belongs to exactly one stage)
    files = sorted(p for p in src.iterdir() if p.is_file() and (
        p.stem == args.family if args.family else p.stem not in FAMILIES))
    for file in files:
        with atomic_path(dst / file.name) as tmp:
            tmp.write_bytes(file.read_bytes())
    if args.family:
        return {"published": [f.name for f in files], "to": str(dst)}
    # what `dvc metrics show` / `dvc metrics diff` read: one small file per run, so DVC prints
    # one row per run with a column per score
    from heptapod.report import METRICS

    runs = read_json(src / "metrics.json")["runs"]
    for run, row in runs.items():
        write_json(dst / "scores" / f"{run}.json", {k: row[k] for k in METRICS if row.get(k) is not None})
    return {"published": [f.name for f in files], "scores": sorted(runs), "to": str(dst)}


def cmd_index(args, cfg) -> dict:
    from heptapod.report import write_index

    return write_index(args.report, args.out)


def cmd_stability(args, cfg) -> dict:
    from heptapod.stability import stability_report

    if not cfg.workflow.rerun_of:
        raise ConfigError(f"preset '{args.preset}' sets no workflow.rerun_of: nothing to compare with")
    families = list(cfg.workflow.families())
    return stability_report(args.first, args.second, families, args.out, Path(args.out).with_suffix(".json"))


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


def _shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", type=int, default=0, help="this job's shard, 0-based (default 0)")
    p.add_argument("--shards", type=int, default=1, help="number of shards (default 1)")


def _reference_args(p: argparse.ArgumentParser) -> None:
    """Inputs that only the dataset-classifier / held-out-images evaluation needs."""
    p.add_argument("--real", default=None, help="held-out image store (not with evaluate.reference_stats)")
    p.add_argument("--classifier", default=None, help="dataset classifier (not with Inception weights)")


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
    p = add("train-tokenizer", cmd_train_tokenizer, "train a tokenizer (VQ or KL VAE), or import a "
            "published one (LlamaGen vq_ds16_c2i, MAR kl16)")
    p.add_argument("--kind", required=True, choices=["vq", "kl"])
    p.add_argument("--images", default=None, help="train split to train on")
    p.add_argument("--published", default=None, help="released checkpoint to import instead")
    p.add_argument("--out", required=True)
    p = add("evaluate-tokenizer", cmd_evaluate_tokenizer, "reconstruction MSE/PSNR, codebook use, rFID")
    for a in ("--tokenizer", "--images", "--out", "--png"):
        p.add_argument(a, required=True)
    p.add_argument("--classifier", default=None, help="dataset classifier (not with Inception weights)")
    p = add("extract-latents", cmd_extract_latents, "encode one shard of a split (and its flip) to a part store")
    for a in ("--tokenizer", "--images", "--out"):
        p.add_argument(a, required=True)
    _shard_args(p)
    p = add("merge-latents", cmd_merge_latents, "join the part stores of all shards into the latent store")
    p.add_argument("--parts", required=True, nargs="+", help="part stores of shards 0..K-1, in order")
    p.add_argument("--out", required=True)
    p = add("train", cmd_train, "train (or resume) a generator", variant=True)
    p.add_argument("--latents", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this step (resume later)")
    p.add_argument("--val-latents", default=None, help="test latent store: held-out score at every "
                   "snapshot (train.val_images); none: no validation")
    p.add_argument("--nproc", type=int, default=1, help="processes (GPUs) of one DDP run; >1 launches "
                   "torchrun (default 1)")
    p.add_argument("--restart-stale", action="store_true", help="a state left by other parameters is "
                   "removed (with its snapshots) and training starts over, instead of an error")
    p = add("sample", cmd_sample, "generate one shard of a run's class-balanced samples", variant=True)
    for a in ("--model", "--tokenizer", "--out"):
        p.add_argument(a, required=True)
    _shard_args(p)
    p = add("merge-samples", cmd_merge_samples, "join sample shards into the run's store and PNG grid",
            variant=True)
    p.add_argument("--parts", required=True, nargs="+", help="part stores of shards 0..K-1, in order")
    p.add_argument("--out", required=True)
    p.add_argument("--grid", required=True)
    p = add("export-samples", cmd_export_samples, "samples as an ADM-style npz (arr_0 NHWC uint8, arr_1 "
            "labels) and one PNG each")
    for a in ("--samples", "--npz", "--png-dir"):
        p.add_argument(a, required=True)
    p = add("evaluate", cmd_evaluate, "FID / IS / KID of samples with torch-fidelity", variant=True)
    for a in ("--samples", "--out"):
        p.add_argument(a, required=True)
    _reference_args(p)
    p.add_argument("--classifier-metrics", default=None)
    p = add("likelihood", cmd_likelihood, "held-out NLL in bits/token (discrete) or validation "
            "diffusion loss (continuous) of a run", variant=True)
    for a in ("--model", "--latents", "--out"):
        p.add_argument(a, required=True)
    p = add("noise-floor", cmd_noise_floor, "FID / IS / KID of real train images vs the reference set "
            "at the runs' sample counts: the metric's own noise")
    p.add_argument("--train", required=True, help="train-split image store (the 'samples' of the floor)")
    p.add_argument("--out", required=True)
    _reference_args(p)
    p = add("speed", cmd_speed, "images/s and FID/IS/KID of a run at k positions per sampling step "
            "(evaluate.speed_positions)", variant=True)
    for a in ("--model", "--tokenizer", "--out-dir"):
        p.add_argument(a, required=True)
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=MODEL",
                   help="a one-position-per-step model whose images/s stands beside (repeatable)")
    p.add_argument("--noise-from", default=None, help="a family report (.json) whose FID noise judges "
                   "quality changes (none: no verdict)")
    _reference_args(p)
    p = add("progress", cmd_progress, "FID / IS / KID of a run's snapshots (metrics vs training)",
            variant=True)
    for a in ("--train-dir", "--tokenizer", "--out"):
        p.add_argument(a, required=True)
    _reference_args(p)
    p = add("reference-stats", cmd_reference_stats, "FID statistics (mu, sigma) of an image store, as an npz")
    p.add_argument("--images", required=True)
    p.add_argument("--classifier", default=None, help="dataset classifier (when no Inception weights)")
    p.add_argument("--out", required=True)
    p = add("report-family", cmd_report_family, "table, plot and statement of one ablation family")
    p.add_argument("--family", required=True, choices=list(FAMILIES))
    p.add_argument("--out-dir", required=True)
    p = add("report", cmd_report, "README, run table and plots of a preset's results (after its families)")
    p.add_argument("--out-dir", required=True)
    p = add("index", cmd_index, "write results/README.md from a preset's report")
    p.add_argument("--report", required=True)
    p.add_argument("--out", required=True)
    p = add("stability", cmd_stability, "which verdicts of a preset's report survive its rerun "
            "(workflow.rerun_of)")
    p.add_argument("--first", required=True, help="report folder of the preset rerun (workflow.rerun_of)")
    p.add_argument("--second", required=True, help="report folder of the rerun")
    p.add_argument("--out", required=True, help="stability.md (a .json beside it)")
    p = add("publish", cmd_publish, "copy a finished report (or one family's files) into the DVC-owned folder")
    p.add_argument("--src", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--family", default=None, choices=list(FAMILIES), help="only this family's files")
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
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        params = load_params(args.params)
        args.preset = args.preset or params["preset"]
        if args.preset not in preset_names(params):
            raise ConfigError(f"unknown preset '{args.preset}' (known: {', '.join(preset_names(params))})")
        cfg = load_config(args.params, args.preset, getattr(args, "variant", None))
        from heptapod.utils.training import set_threads

        if args.threads is not None:
            set_threads(args.threads)
        from heptapod.utils.gpus import gpu_slot_from_env

        t0 = time.perf_counter()
        # GPU stages take devices of the HEPTAPOD_GPUS pool (when set) for their lifetime; the
        # processes torchrun starts use what their launcher took
        takes_gpus = args.command in GPU_STAGES and not under_torchrun()
        with gpu_slot_from_env(getattr(args, "nproc", 1)) if takes_gpus else contextlib.nullcontext():
            result = args.func(args, cfg)
        if result:
            log.info("%s done in %.1f s: %s", args.command, time.perf_counter() - t0,
                     json.dumps(result, default=str))
        return 0
    except (ConfigError, CheckpointError, StoreError, FileNotFoundError, ValueError,
            FloatingPointError, LaunchError, TimeoutError) as exc:
        print(f"heptapod {args.command}: error: {exc}", file=sys.stderr)
        return 2
