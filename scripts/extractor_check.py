"""How much of a FID move is the extractor's? Retrain the dataset classifier under other
floating-point conditions (another thread count, as a rerun on another machine would) and score a
finished preset's samples with both classifiers: the generators are the same, so every FID move
is the extractor's. Writes <out>.md and <out>.json.

    python scripts/extractor_check.py --preset default --threads 2 \
        --out results/report/default-rerun/extractor
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import torch

from heptapod import paths
from heptapod.config import load_params, resolve
from heptapod.evaluation.stage import classifier_stage, evaluate_samples
from heptapod.provenance import provenance
from heptapod.utils.io import load_checkpoint, read_json, write_json, write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the second classifier's training")
    ap.add_argument("--out", required=True, help="output path without suffix (.md and .json are written)")
    args = ap.parse_args()

    cfg = resolve(load_params(args.params), args.preset)
    # the second classifier is trained from the preset's settings, also where it scores with a fixed one
    retrain = dataclasses.replace(cfg, classifier=dataclasses.replace(cfg.classifier, checkpoint=None))
    test = paths.data.of(args.preset, "test")
    second = paths.classifier.of(args.preset).with_name(f"retrained-{args.threads}-threads.pt")
    torch.set_num_threads(args.threads)
    if not second.exists():
        trained = classifier_stage(retrain, paths.data.of(args.preset, "train"), test, second)
    else:
        trained = {"test_accuracy": load_checkpoint(second, "classifier")["test_accuracy"]}
    first_acc = read_json(paths.classifier_metrics.of(args.preset))["test_accuracy"]
    torch.set_num_threads(1)  # as the evaluate jobs score

    rows = {}
    for run in cfg.workflow.runs():
        first = read_json(paths.eval_metrics.of(args.preset, run))
        again = evaluate_samples(cfg, paths.samples.of(args.preset, run), test, second, None)
        rows[run] = {"first": first["fid"], "second": again["fid"], "moved": again["fid"] - first["fid"]}
    seed_sd = read_json(paths.family_report.of(args.preset, "table1", "json"))["noise"]["fid"]["seed_sd"]
    moves = [abs(r["moved"]) for r in rows.values()]
    summary = {"median_abs": statistics.median(moves), "max_abs": max(moves),
               "same_sign": max(sum(r["moved"] > 0 for r in rows.values()), sum(r["moved"] < 0 for r in rows.values())),
               "runs": len(rows), "fid_seed_sd": seed_sd}
    lines = [f"# How much of a FID move is the extractor's? `{args.preset}`", "",
             f"The preset's samples scored by its dataset classifier (test accuracy {first_acc:.4f}) and by the "
             f"same classifier retrained with {args.threads} torch threads instead of 1 (same seed, data order and "
             f"steps; test accuracy {trained['test_accuracy']:.4f}): other floating-point reductions, as on another "
             "machine. The generators and their samples are the same, so every move below is the extractor's.", "",
             f"**Median |move| {summary['median_abs']:.3g}, largest {summary['max_abs']:.3g}, over {len(rows)} runs; "
             f"{summary['same_sign']} of {len(rows)} moved the same way.** For scale: the report's FID seed SD "
             f"(Table 1) is {seed_sd:.3g}.", "",
             "| run | FID (first classifier) | FID (retrained classifier) | moved |", "|---|---|---|---|"]
    lines += [f"| {run} | {r['first']:.4g} | {r['second']:.4g} | {r['moved']:+.3g} |" for run, r in rows.items()]
    write_text(f"{args.out}.md", "\n".join(lines) + "\n")
    write_json(f"{args.out}.json", {"runs": rows, "summary": summary, "threads": args.threads,
                                    "classifier_test_accuracy": {"first": first_acc, "second": trained["test_accuracy"]},
                                    "provenance": provenance(args.preset, cfg.data.dataset)})
    print("\n".join(lines[:7]))


if __name__ == "__main__":
    main()
