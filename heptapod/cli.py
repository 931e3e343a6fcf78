"""Command line: one subcommand per pipeline stage (the Snakemake rules call exactly these).

Every subcommand takes ``--params`` / ``--preset`` (and ``--variant`` where it applies) and
explicit input and output paths; the paths the workflow uses are built in ``heptapod.paths``.
This module only parses arguments and hands them to the stage functions; what a stage writes
carries the one provenance record of ``heptapod.provenance``.
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

from heptapod import paths
from heptapod.config import (FAMILIES, ConfigError, load_config, load_params, longer_chain, preset_names,
                             resolve, split_run)
from heptapod.data.store import StoreError
from heptapod.provenance import provenance
from heptapod.utils.io import CheckpointError, read_json, write_json
from heptapod.utils.launch import LaunchError, launch_ddp, under_torchrun

log = logging.getLogger("heptapod")
# stages that take a HEPTAPOD_GPUS device
GPU_STAGES = {"train", "sample", "progress", "likelihood", "noise-floor", "speed", "extract-latents", "evaluate",
              "evaluate-tokenizer", "bench", "bench-scale", "train-tokenizer", "train-classifier"}


def _common(p: argparse.ArgumentParser, variant: bool = False) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--preset", default=None, help="preset name (default: the file's 'preset')")
    if variant:
        p.add_argument("--variant", default=None, help="ablation variant (a key of 'variants')")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")


def _pairs(values: list[str], flag: str, form: str) -> dict[str, str]:
    """A repeatable ``flag``'s NAME=VALUE arguments as a dict; one without '=' is an error."""
    bad = [v for v in values if "=" not in v]
    if bad:
        raise ValueError(f"{flag} takes {form}, got {' '.join(bad)}")
    return dict(v.split("=", 1) for v in values)


def _stamped(path: str, out: dict, args, cfg) -> None:
    """Write a stage's result with the provenance of this command."""
    prov = provenance(args.preset, cfg.data.dataset, getattr(args, "variant", None))
    if "machine" in out:  # a benchmark's own, fuller description of the machine it measured
        del prov["machine"]
    write_json(path, {**out, **prov})


def cmd_prepare(args, cfg) -> dict:
    from heptapod.data.images import prepare

    return prepare(cfg.data, args.split, args.out)


def cmd_train_classifier(args, cfg) -> dict:
    from heptapod.evaluation.stage import classifier_stage

    out = classifier_stage(cfg, args.train, args.test, args.out)
    _stamped(args.metrics, out, args, cfg)
    return out


def cmd_train_tokenizer(args, cfg) -> dict:
    from heptapod.tokenizers.stage import train_tokenizer, use_checkpoint

    if args.checkpoint:
        return use_checkpoint(cfg, args.kind, args.checkpoint, args.out)
    if not args.images:
        raise ConfigError("train-tokenizer needs --images (a train split) or --checkpoint (a tokenizer file)")
    return train_tokenizer(cfg, args.kind, args.images, args.out)


def cmd_evaluate_tokenizer(args, cfg) -> dict:
    from heptapod.evaluation.stage import evaluate_tokenizer

    out = evaluate_tokenizer(cfg, args.tokenizer, args.images, args.classifier, args.png)
    _stamped(args.out, out, args, cfg)
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
                 restart_stale=args.restart_stale,
                 parked=paths.parked.of(args.preset, args.variant) if args.resume_parked else None)


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
    _stamped(args.out, out, args, cfg)
    return out


def cmd_likelihood(args, cfg) -> dict:
    from heptapod.evaluation.stage import likelihood_stage

    out = likelihood_stage(cfg, args.model, args.latents)
    _stamped(args.out, out, args, cfg)
    return {k: v for k, v in out.items() if not k.endswith("by_order")}


def cmd_noise_floor(args, cfg) -> dict:
    from heptapod.evaluation.stage import noise_floor

    tokenizers = _pairs(args.tokenizer, "--tokenizer", "KIND=CHECKPOINT")
    out = noise_floor(cfg, args.train, args.real, args.classifier, tokenizers)
    _stamped(args.out, out, args, cfg)
    return {str(k): v["fid_sd"] for k, v in out["by_count"].items()}


def cmd_speed(args, cfg) -> dict:
    from heptapod.evaluation.speed import family_fid_noise, speed_curve, write_speed
    from heptapod.evaluation.stage import reference_images

    baselines = _pairs(args.baseline, "--baseline", "NAME=MODEL")
    noise = family_fid_noise(args.noise_from) if args.noise_from else {}
    result = speed_curve(cfg, args.model, baselines, args.tokenizer, reference_images(cfg, args.real),
                         args.classifier, noise)
    out = Path(args.out_dir)
    write_speed(result, args.variant or "", out / "speed.json", out / "speed.md", out / "speed.png")
    return {f"k={r['k']}": f"{r['images_per_s']:.3g} img/s, FID {r['fid']:.4g}" for r in result["rows"]}


def cmd_progress(args, cfg) -> dict:
    from heptapod.evaluation.stage import evaluate_progress

    rows = evaluate_progress(cfg, args.train_dir, args.tokenizer, args.real, args.classifier)
    _stamped(args.out, {"progress": rows}, args, cfg)
    return {"checkpoints": len(rows), "fid": [round(r["fid"], 3) for r in rows]}


def cmd_reference_stats(args, cfg) -> dict:
    from heptapod.evaluation.stage import reference_stats_stage

    return reference_stats_stage(cfg, args.images, args.classifier, args.out)


def _run_files(args, runs: list[str], prefix: str = "") -> dict:
    """The per-run file lists of a report command, aligned with ``runs`` (from the flags
    ``--<prefix>metrics`` ...)."""
    from heptapod.report.runs import run_files

    lists = {"metrics": "metrics", "likelihood": "likelihood", "model": "models", "log": "logs", "grid": "grids"}
    return run_files(runs, **{k: getattr(args, f"{prefix}{flag}", None) for k, flag in lists.items()})


def cmd_report_family(args, cfg) -> dict:
    from heptapod.report.family import write_family

    runs = list(dict.fromkeys(args.runs + args.noise_runs))
    files = _run_files(args, runs)
    if args.progress and len(args.progress) != len(args.runs):
        raise ValueError(f"--progress names {len(args.progress)} files for {len(args.runs)} --runs")
    progress = dict(zip(args.runs, map(Path, args.progress)))
    files = {r: dataclasses.replace(f, progress=progress.get(r)) for r, f in files.items()}
    return write_family(load_params(args.params), args.preset, cfg, args.family,
                        {r: files[r] for r in args.runs}, {r: files[r] for r in args.noise_runs},
                        args.floor, args.out_dir)


def cmd_report(args, cfg) -> dict:
    from heptapod.report.readme import write_report

    return write_report(args.preset, cfg, _run_files(args, args.runs), args.families, args.floor,
                        args.tokenizers, args.recons, args.classifier_metrics, args.out_dir)


def cmd_publish(args, cfg) -> dict:
    from heptapod.report.publish import publish

    return publish(args.src, args.out_dir, args.family)


def cmd_index(args, cfg) -> dict:
    from heptapod.report.readme import write_index

    return write_index(args.report, args.out)


def cmd_stability(args, cfg) -> dict:
    from heptapod.stability import stability_report

    # 'machine' compares any two reports of one preset (a committed one and a fresh run of it)
    key = {"rerun": "rerun_of", "dataset": "compare_to"}.get(args.kind)
    if key and not getattr(cfg.workflow, key):
        raise ConfigError(f"preset '{args.preset}' sets no workflow.{key}: nothing to compare with")
    families = list(cfg.workflow.families())
    if args.families:  # part of the report, e.g. one family rerun on its own
        if unknown := [f for f in args.families if f not in families]:
            raise ConfigError(f"--families: preset '{args.preset}' has no family {', '.join(unknown)} "
                              f"(its families: {', '.join(families)})")
        families = args.families
    extractor = None
    if args.runs:
        files = (args.first_metrics, args.second_metrics, args.first_extractor)
        if not all(f and len(f) == len(args.runs) for f in files):
            raise ValueError("--first-metrics, --second-metrics and --first-extractor need one file per --runs entry")
        extractor = {run: tuple(read_json(f[i]) for f in files) for i, run in enumerate(args.runs)}
    return stability_report(args.first, args.second, families, args.out, Path(args.out).with_suffix(".json"),
                            args.kind, extractor)


def cmd_convergence(args, cfg) -> dict:
    from heptapod.convergence import convergence_report

    if not cfg.workflow.longer_of:
        raise ConfigError(f"preset '{args.preset}' sets no workflow.longer_of: nothing to compare with")
    params = load_params(args.params)
    chain = longer_chain(params, args.preset)
    # the shorter preset's files are those of the namesakes: the same run names as --runs
    files = [_run_files(args, runs, prefix) for runs, prefix in
             ((args.runs, "shorter_"), (args.runs, ""), (args.first_runs, "first_"))]
    unknown = sorted(set(args.density_runs) - set(args.first_runs))
    if unknown:
        raise ValueError(f"--density-runs names runs that --first-runs does not: {', '.join(unknown)}")
    supervision = {v: resolve(params, chain[-1], v).train.supervision_density
                   for v in dict.fromkeys(split_run(r)[0] for r in args.first_runs)}
    return convergence_report(*files, args.first_floor, cfg.sample.num_samples,
                              (args.shorter_latents, args.latents), (chain[1], args.preset, chain[-1]), args.out,
                              Path(args.out).with_suffix(".json"), cfg.data.dataset, args.steps or (),
                              tuple(args.density_runs), supervision, args.first_latents,
                              (args.earlier_link or [None])[0])


def cmd_analyze(args, cfg) -> dict:
    from heptapod.analysis import stage

    # NLL by step reads the runs' scores (likelihood files), every other analysis their tokens
    per_run = "likelihood" if args.name == "steps" else "latents"
    if not (len(args.runs) == len(args.models) == len(getattr(args, per_run))):
        raise ValueError(f"--runs, --models and --{per_run} name {len(args.runs)}, {len(args.models)} and "
                         f"{len(getattr(args, per_run))} entries: one each per run")
    models, latents = dict(zip(args.runs, map(Path, args.models))), dict(zip(args.runs, map(Path, args.latents)))
    if args.name == "attention":
        return stage.write_attention(cfg, args.preset, models, latents, args.out_dir)
    if args.name == "similarity":
        if not args.images:
            raise ConfigError("analyze --name similarity needs --images (the test image store)")
        return stage.write_similarity(cfg, args.preset, models, latents, args.images, args.out_dir)
    if args.name == "steps":
        return stage.write_steps(cfg, args.preset, dict(zip(args.runs, map(Path, args.likelihood))), models,
                                 args.out_dir)
    if not args.train_latents:
        raise ConfigError("analyze --name probe needs --train-latents (the train latent store)")
    return stage.write_probe(cfg, args.preset, models, args.train_latents, latents, args.out_dir)


def cmd_bench_scale(args, cfg) -> dict:
    import tempfile

    from heptapod.scale_bench import run_scale_bench, synthetic_latents

    def write(out: dict) -> None:
        _stamped(args.out, out, args, cfg)

    with tempfile.TemporaryDirectory() as tmp:
        rows = max(max(args.batches, default=2) * (args.steps + 2), args.sample_batch)
        latents = synthetic_latents(cfg, Path(tmp) / "latents.h5", rows)
        out = run_scale_bench(cfg, latents, args.batches, args.positions, args.sample_batch, args.steps,
                              args.compile_batch, write)
    return {"largest_fitting_batch": out["train"]["largest_fitting_batch"]}


def cmd_bench(args, cfg) -> dict:
    from heptapod.bench import run_bench

    out = run_bench(cfg, args.latents)
    _stamped(args.out, out, args, cfg)
    return out


def cmd_schema(args, cfg) -> dict:
    from heptapod.config import schema_text

    text, path = schema_text(), Path(args.path)
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


def cmd_status(args, cfg) -> dict:
    from heptapod.config import longer_links
    from heptapod.status import measured_speeds, preset_status, status_text, total_text

    params = load_params(args.params)
    speeds = measured_speeds(params)  # read every preset's logs once
    # a preset's doubling chain trains after it (scripts/reference_run.sh): its links too
    rows = {p: preset_status(params, p, speeds) for p in [args.preset, *longer_links(params, args.preset)]}
    texts = [status_text(p, r) for p, r in rows.items()]
    if len(rows) > 1:
        texts.append(total_text([r for preset_rows in rows.values() for r in preset_rows]))
    print("\n\n".join(texts))
    return {}


def _check_runs(args, cfg) -> None:
    """``--runs`` must name runs of the preset."""
    if unknown := [r for r in args.runs or [] if r not in cfg.workflow.runs()]:
        raise ConfigError(f"preset '{args.preset}' trains no run {', '.join(unknown)} "
                          f"(its runs: {', '.join(cfg.workflow.runs())})")


def cmd_record(args, cfg) -> dict:
    from heptapod.parking import unpark
    from heptapod.records import missing_files, stale_scores, up_to_date, write_record

    params = load_params(args.params)
    _check_runs(args, cfg)
    runs = args.runs
    if not runs:  # every run with all its files; a run scored without its FID curve yet is named
        runs = []
        for run in cfg.workflow.runs():
            if missing := missing_files(cfg, args.preset, run):
                if paths.eval_metrics.of(args.preset, run).is_file():
                    print(f"{run}: not recorded, scored without {', '.join(map(str, missing))}")
            elif stale := stale_scores(cfg, args.preset, run):
                print(f"{run}: not recorded, retrained and not scored again yet ({', '.join(map(str, stale))})")
            else:
                runs.append(run)
        if not runs:
            print(f"preset '{args.preset}' has no scored run to record yet")
    recorded = []
    for run in runs:
        out, run_cfg = paths.record_dir.of(args.preset, run), resolve(params, args.preset, run)
        if up_to_date(run_cfg, args.preset, run, out):
            print(f"{run}: already recorded in {out}")
        else:
            write_record(run_cfg, args.preset, run, out)
            recorded.append(run)
            print(f"recorded {run} -> {out}")
        if unpark(parked := paths.parked.of(args.preset, run)):  # the record supersedes it
            print(f"{run}: removed its parked state {parked}")
    return {"recorded": recorded}


def cmd_park(args, cfg) -> dict:
    from heptapod.parking import park

    _check_runs(args, cfg)
    # by default every run that is part-way here: a state, no final model
    runs = args.runs or [r for r in cfg.workflow.runs()
                         if (paths.train_dir.of(args.preset, r) / paths.STATE_FILE).is_file()
                         and not paths.model.of(args.preset, r).is_file()]
    if not runs:
        print(f"preset '{args.preset}' has no part-way run to park")
    params, parked = load_params(args.params), {}
    for run in runs:
        out = paths.parked.of(args.preset, run)
        try:
            stamp = park(paths.train_dir.of(args.preset, run), out, resolve(params, args.preset, run),
                         with_snapshots=run in cfg.workflow.progress_runs(),
                         provenance=provenance(args.preset, cfg.data.dataset, run))
        except (ConfigError, CheckpointError) as exc:  # the other runs are parked all the same
            print(f"{run}: not parked: {exc}")
            continue
        if stamp is None:
            print(f"{run}: {out} is as far on as this machine's state: left as it is")
            continue
        parked[run] = stamp["step"]
        print(f"parked {run} at step {stamp['step']} -> {out}")
    return {"parked": parked}


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


def _run_file_args(p: argparse.ArgumentParser, order: str, prefix: str = "") -> None:
    """The files of each run a report reads, in the order of ``order`` (flags ``--<prefix>metrics`` ...)."""
    for flag, what in (("metrics", "FID/IS/KID"), ("likelihood", "held-out NLL"), ("models", "final checkpoints"),
                       ("logs", "training logs")):
        p.add_argument(f"--{prefix}{flag}", required=True, nargs="+", help=f"{what}, one per run ({order})")


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
    p.add_argument("--checkpoint", default=None,
                   help="tokenizer file to use instead of training: a released checkpoint (imported) or a "
                        "trained tokenizer.pt (pinned)")
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
    p.add_argument("--resume-parked", action="store_true", help="resume from the run's parked state "
                   "(heptapod park: results/parked/<preset>/<variant>) where it is further on than "
                   "--out-dir's own")
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
            "at the runs' sample counts: the metric's own noise; and the tokenizer ceiling")
    p.add_argument("--train", required=True, help="train-split image store (the 'samples' of the floor)")
    p.add_argument("--tokenizer", action="append", default=[], metavar="KIND=CHECKPOINT",
                   help="a tokenizer the runs read: the floor's images through it score its ceiling (repeatable)")
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
    p.add_argument("--runs", required=True, nargs="+", help="the family's runs (variant or variant@seed)")
    p.add_argument("--noise-runs", nargs="*", default=[], help="runs whose seed spread judges a family "
                   "without replicates of its own (Table 1's)")
    _run_file_args(p, "--runs, then the --noise-runs not in --runs")
    p.add_argument("--progress", nargs="*", default=[], help="snapshot scores, one per --runs (Fig. 6-8)")
    p.add_argument("--floor", required=True, help="the metric's noise floor (noise-floor's JSON)")
    p.add_argument("--out-dir", required=True)
    p = add("report", cmd_report, "README, run table and plots of a preset's results (after its families)")
    p.add_argument("--runs", required=True, nargs="+", help="every run of the preset")
    _run_file_args(p, "--runs")
    p.add_argument("--grids", required=True, nargs="+", help="sample grids, one per run")
    p.add_argument("--families", required=True, nargs="+", help="the families' JSON files (their .md beside)")
    p.add_argument("--floor", required=True, help="the metric's noise floor (noise-floor's JSON)")
    p.add_argument("--tokenizers", nargs="*", default=[], help="tokenizer metrics files")
    p.add_argument("--recons", nargs="*", default=[], help="tokenizer reconstruction PNGs, one per --tokenizers")
    p.add_argument("--classifier-metrics", default=None, help="the dataset classifier's metrics (its accuracy)")
    p.add_argument("--out-dir", required=True)
    p = add("index", cmd_index, "write results/README.md from a preset's report")
    p.add_argument("--report", required=True)
    p.add_argument("--out", required=True)
    p = add("stability", cmd_stability, "which verdicts of a preset's report survive its rerun "
            "(workflow.rerun_of), or hold on another data set (workflow.compare_to)")
    p.add_argument("--kind", choices=["rerun", "machine", "dataset"], default="rerun",
                   help="rerun: --first is workflow.rerun_of's report; dataset: workflow.compare_to's; "
                   "machine: the same preset's report from another machine (e.g. a copy of the committed one)")
    p.add_argument("--first", required=True, help="report folder of the preset rerun (workflow.rerun_of)")
    p.add_argument("--second", required=True, help="report folder of the rerun")
    p.add_argument("--families", nargs="+", default=None,
                   help="compare only these families (default: every family of the preset)")
    p.add_argument("--runs", nargs="+", default=None,
                   help="the rerun's runs, to split each FID move into extractor and generator (with the next three)")
    p.add_argument("--first-metrics", nargs="+", help="each run's metrics.json in the first run")
    p.add_argument("--second-metrics", nargs="+", help="each run's metrics.json in the rerun")
    p.add_argument("--first-extractor", nargs="+", help="each rerun sample set scored by the first run's classifier")
    p.add_argument("--out", required=True, help="stability.md (a .json beside it)")
    p = add("convergence", cmd_convergence, "how far the runs of a preset moved from their namesakes in "
            "workflow.longer_of (the same runs, a shorter schedule), and whether Table 1's verdicts hold")
    p.add_argument("--runs", required=True, nargs="+", help="the runs of this preset (and of their namesakes)")
    _run_file_args(p, "--runs")
    p.add_argument("--latents", required=True, help="this preset's test latent store")
    _run_file_args(p, "--runs: the namesakes in workflow.longer_of", prefix="shorter-")
    p.add_argument("--shorter-latents", required=True, help="workflow.longer_of's test latent store")
    p.add_argument("--first-runs", required=True, nargs="+",
                   help="every Table 1 run of the chain's first preset (following workflow.longer_of): the seed noise")
    _run_file_args(p, "--first-runs", prefix="first-")
    p.add_argument("--first-floor", required=True, help="the chain's first preset's noise floor (JSON)")
    p.add_argument("--density-runs", nargs="*", default=[],
                   help="which of --first-runs are the first preset's density sweep (Fig. 8) and not Table 1's: "
                        "set beside the chain at equal training compute")
    p.add_argument("--first-latents", default=None,
                   help="the chain's first preset's test latent store (pairs the density runs' images)")
    p.add_argument("--steps", nargs="*", default=None,
                   help="held-out NLL by generation step (analysis/steps.json) of workflow.longer_of, this preset "
                        "and, where it is not workflow.longer_of, the chain's first: set side by side")
    p.add_argument("--earlier-link", nargs="*", default=None,
                   help="the link before's convergence.json (workflow.longer_of's own comparison, where it is not "
                        "the chain's first): its noise carries over, so a threshold never shrinks along the chain")
    p.add_argument("--out", required=True, help="convergence.md (a .json and .png beside it)")
    p = add("publish", cmd_publish, "copy a finished report (or one family's files) into the DVC-owned folder")
    p.add_argument("--src", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--family", default=None, choices=list(FAMILIES), help="only this family's files")
    p = add("analyze", cmd_analyze, "attention distance, token similarity maps, linear probe or held-out NLL "
            "by generation step of trained runs")
    p.add_argument("--name", required=True, choices=["attention", "similarity", "probe", "steps"])
    p.add_argument("--runs", required=True, nargs="+", help="the runs analysed (variant or variant@seed)")
    p.add_argument("--models", required=True, nargs="+",
                   help="their final checkpoints (steps: or their records' model summaries), one per run")
    p.add_argument("--latents", nargs="*", default=[], help="their test latent stores, one per run (not steps)")
    p.add_argument("--likelihood", nargs="*", default=[], help="their held-out likelihood files, one per run (steps)")
    p.add_argument("--train-latents", default=None, help="train latent store (probe)")
    p.add_argument("--images", default=None, help="test image store (similarity: the images drawn)")
    p.add_argument("--out-dir", required=True)
    p = add("bench", cmd_bench, "training/sampling/loader throughput, written as JSON")
    p.add_argument("--latents", required=True)
    p.add_argument("--out", required=True)
    p = add("bench-scale", cmd_bench_scale, "paper-scale training/sampling throughput, MFU and memory of "
            "a preset's model on synthetic latents of its tokenizer's shape, written as JSON", variant=True)
    p.add_argument("--batches", type=int, nargs="*", default=[32, 64, 128, 256],
                   help="training batches, tried in order until one does not fit (none: no training)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per batch (after 2 warm-up steps)")
    p.add_argument("--positions", type=int, nargs="*", default=[1, 4], help="sampling: positions per step k (none: no sampling)")
    p.add_argument("--sample-batch", type=int, default=256)
    p.add_argument("--compile-batch", type=int, default=None, help="also time torch.compile at this batch")
    p.add_argument("--out", required=True)
    p = add("schema", cmd_schema, "print, write or check the params JSON schema")
    p.add_argument("--path", default="workflow/schemas/params.schema.yaml")
    p.add_argument("--write", action="store_true")
    p.add_argument("--check", action="store_true")
    add("params", cmd_params, "print the resolved parameters of a preset/variant", variant=True)
    add("status", cmd_status, "where a preset's runs stand, and those of its doubling chain: trained, part-way "
        "(steps, speed, time left) or not started; read from the files the pipeline writes")
    p = add("record", cmd_record, "keep a preset's scored runs as records in results/records/<preset>/ (the "
            "files its pages read), for workflow.records to use in place of retraining them")
    p.add_argument("--runs", nargs="*", default=None, help="runs to record (default: every scored run)")
    p = add("park", cmd_park, "keep a preset's part-way runs' training states in results/parked/<preset>/ "
            "(heptapod.parking), for the train stage to resume from on another machine")
    p.add_argument("--runs", nargs="*", default=None, help="runs to park (default: every part-way run)")
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
            brief = ({k: v for k, v in result.items() if not (isinstance(v, list) and len(v) > 16)}
                     if isinstance(result, dict) else result)  # per-image lists stay in the output file
            log.info("%s done in %.1f s: %s", args.command, time.perf_counter() - t0,
                     json.dumps(brief, default=str))
        return 0
    except (ConfigError, CheckpointError, StoreError, FileNotFoundError, ValueError,
            FloatingPointError, LaunchError, TimeoutError) as exc:
        print(f"heptapod {args.command}: error: {exc}", file=sys.stderr)
        return 2
