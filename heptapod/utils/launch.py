"""Multi-GPU runs: the same command again under torchrun, one process per GPU (DDP, one node)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

log = logging.getLogger("heptapod")


class LaunchError(RuntimeError):
    """The processes of a multi-GPU run failed (their own output says why)."""


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def launch_ddp(nproc: int, argv: list[str]) -> dict:
    """Run ``python -m heptapod <argv>`` under torchrun with ``nproc`` processes."""
    # the processes need no --nproc, and torchrun's own parser would take it for --nproc-per-node
    own = [a for i, a in enumerate(argv) if not (a.startswith("--nproc") or (i and argv[i - 1] == "--nproc"))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "heptapod", *own]
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    if subprocess.run(cmd).returncode:
        raise LaunchError(f"torchrun with {nproc} processes failed (see the log above)")
    return {"processes": nproc}
