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
from heptapod.train import load_generator
from heptapod.utils.device import autocast, resolve_device, synced_time
from heptapod.utils.training import step_generator


def sampling_seconds(model, batch: int, k: int, device: torch.device) -> float:
    labels = balanced_labels(batch, model.spec.num_classes).to(device)
    t0 = synced_time(device)
    with torch.no_grad(), autocast(device):
        model.sample(labels, generator=step_generator(0, 1), positions_per_step=k)
    return synced_time(device) - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batches", type=int, nargs="+", default=[100, 500, 1000])
    ap.add_argument("--positions", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    device = resolve_device("auto")
    model = load_generator(args.model).to(device)
    sampling_seconds(model, 4, 1, device)  # warm-up: kernels, allocator
    for k in args.positions:
        for b in args.batches:
            print(f"batch {b} k {k}: {sampling_seconds(model, b, k, device):.2f} s", flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            sampling_seconds(model, args.batches[len(args.batches) // 2], 1, device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"done after {time.perf_counter() - t:.1f} s")
