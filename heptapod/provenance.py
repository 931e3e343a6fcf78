"""The one provenance record every stage output carries: which code, preset and data made it."""

from __future__ import annotations

import time

from heptapod.utils.device import machine, machine_label
from heptapod.utils.io import git_commit


def provenance(preset: str | None, dataset: str, variant: str | None = None, **extra) -> dict:
    """Preset, variant, commit, dataset, machine and creation time, plus what the stage adds (e.g.
    the feature extractor of a report). The machine belongs here: the same commit on another CPU
    rounds differently, and every trained number downstream moves with it."""
    return {"preset": preset, "variant": variant, "commit": git_commit(), "dataset": dataset,
            "machine": machine_label(machine()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
