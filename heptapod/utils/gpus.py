"""A lock-file pool of GPU ids for concurrent Snakemake jobs on one workstation.

Snakemake limits how many GPU jobs run at once (``--resources gpu=K``) but does not say which
GPU each should use. Each job takes the first free id of ``HEPTAPOD_GPUS`` (e.g. "0,1,2,3")
by an exclusive ``flock`` on ``<lock_dir>/gpu-<id>.lock`` and sets ``CUDA_VISIBLE_DEVICES``
to it; the kernel drops the lock when the job ends, even if it is killed.
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


@contextlib.contextmanager
def gpu_slot(devices: list[str], lock_dir: str | Path, poll_s: float = 0.5,
             timeout_s: float | None = None) -> Iterator[str]:
    """Hold one free device id of ``devices`` (waiting for one if all are taken)."""
    if not devices:
        raise ValueError(f"{ENV_DEVICES} names no device")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        for dev in devices:
            f = open(lock_dir / f"gpu-{dev}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            previous = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = dev
            try:
                yield dev
            finally:
                if previous is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = previous
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
            return
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no free GPU among {devices} after {timeout_s} s")
        time.sleep(poll_s)


def gpu_slot_from_env() -> contextlib.AbstractContextManager:
    """The pool named by HEPTAPOD_GPUS, or a no-op when it is unset."""
    devices = [d for d in os.environ.get(ENV_DEVICES, "").split(",") if d.strip()]
    if not devices:
        return contextlib.nullcontext()
    lock_dir = os.environ.get(ENV_LOCK_DIR, "results/.gpu-locks")
    return gpu_slot([d.strip() for d in devices], lock_dir)
