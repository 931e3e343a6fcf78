"""Sampling time of one trained generator against batch size and positions per step.

    python scripts/sample_timing.py results/train/gpu-check/2d-random/model.pt \
        [--batches 100 500 1000] [--positions 1 4] [--profile]

Prints seconds per full sampling pass (one line per batch and k). A time that barely grows with
the batch is per-step overhead (kernel launches, host round trips), not arithmetic; --profile adds
torch.profiler's busiest operators of one pass at the middle batch. Runs on the GPU when one is
visible (bf16 autocast, as the sample stage), else on the CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from heptapod.sample import balanced_labels
from heptapod.scale_bench import sampling_seconds
from heptapod.train import load_generator
from heptapod.utils.device import resolve_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batches", type=int, nargs="+", default=[100, 500, 1000])
    ap.add_argument("--positions", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    device = resolve_device("auto")
    model = load_generator(args.model).to(device)

    def labels(batch: int) -> torch.Tensor:
        return balanced_labels(batch, model.spec.num_classes).to(device)

    sampling_seconds(model, labels(4), 1)  # warm-up: kernels, allocator
    for k in args.positions:
        for b in args.batches:
            print(f"batch {b} k {k}: {sampling_seconds(model, labels(b), k):.2f} s", flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            sampling_seconds(model, labels(args.batches[len(args.batches) // 2]), 1)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"done after {time.perf_counter() - t:.1f} s")
