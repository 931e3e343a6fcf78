"""Device choice and mixed precision: the same code on CPU (tests, laptops) and CUDA GPUs."""

from __future__ import annotations

import contextlib
import platform
import time
from pathlib import Path

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


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | None = None) -> dict:
    """What the numbers were computed on. The CPU's vector capability picks torch's kernels, so
    two machines that differ in it (AVX2 vs AVX-512) round differently and train apart."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "device": device.type}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out |= {"gpu": p.name, "gpu_memory_gib": p.total_memory / 2**30, "cuda": torch.version.cuda}
    return out


def machine_label(m: dict) -> str:
    """One line for a table: the GPU where there was one, else the CPU and its capability."""
    where = m.get("gpu") or f"{m.get('cpu', '?')} ({m.get('cpu_capability', '?')})"
    return f"{where}, torch {m.get('torch', '?')}, {m.get('threads', '?')} thread(s)"
