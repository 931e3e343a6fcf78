"""A lock-file pool of GPU ids for concurrent Snakemake jobs on one workstation.

Snakemake limits how many GPU jobs run at once (``--resources gpu=K``) but does not say which
GPU each should use. Each job takes the first free ids of ``HEPTAPOD_GPUS`` (e.g. "0,1,2,3"),
as many as it declares, by exclusive ``flock``s on ``<lock_dir>/gpu-<id>.lock`` and sets
``CUDA_VISIBLE_DEVICES`` to them; the kernel drops the locks when the job ends, even if it is
killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

ENV_DEVICES = "HEPTAPOD_GPUS"
ENV_LOCK_DIR = "HEPTAPOD_GPU_LOCK_DIR"


def _try_lock(lock_dir: Path, devices: list[str], count: int) -> list[tuple[str, object]]:
    """Exclusive locks on ``count`` free devices, or none at all (never hold a partial set)."""
    held = []
    for dev in devices:
        f = open(lock_dir / f"gpu-{dev}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        held.append((dev, f))
        if len(held) == count:
            return held
    for _, f in held:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
    return []


@contextlib.contextmanager
def gpu_slot(devices: list[str], lock_dir: str | Path, poll_s: float = 0.5,
             timeout_s: float | None = None, count: int = 1) -> Iterator[str]:
    """Hold ``count`` free device ids of ``devices`` (waiting while too few are free); yields
    them as CUDA_VISIBLE_DEVICES, which is set for the duration."""
    if len(devices) < count:
        raise ValueError(f"{ENV_DEVICES} names {len(devices)} device(s), a job needs {count}")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while not (held := _try_lock(lock_dir, devices, count)):
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no {count} free GPU(s) among {devices} after {timeout_s} s")
        time.sleep(poll_s)
    visible = ",".join(dev for dev, _ in held)
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    try:
        yield visible
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        for _, f in held:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


def gpu_slot_from_env(count: int = 1) -> contextlib.AbstractContextManager:
    """``count`` devices of the pool named by HEPTAPOD_GPUS, or a no-op when it is unset."""
    devices = [d.strip() for d in os.environ.get(ENV_DEVICES, "").split(",") if d.strip()]
    if not devices:
        return contextlib.nullcontext()
    lock_dir = os.environ.get(ENV_LOCK_DIR, "results/.gpu-locks")
    return gpu_slot(devices, lock_dir, count=count)
