"""Device choice and mixed precision: the same code on CPU (tests, laptops) and CUDA GPUs."""

from __future__ import annotations

import contextlib
import time

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ValueError(f"workflow.device: unknown device '{name}' (known: {', '.join(DEVICES)})")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("workflow.device is 'cuda' but no CUDA GPU is visible")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU; full precision on CPU (where exact resume is tested)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synced_time(device: torch.device) -> float:
    """A timestamp after the device has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
