"""The one provenance record every stage output carries: which code, preset and data made it."""

from __future__ import annotations

import time

from heptapod.utils.io import git_commit


def provenance(preset: str | None, dataset: str, variant: str | None = None, **extra) -> dict:
    """Preset, variant, commit, dataset and creation time, plus what the stage adds (e.g. the
    feature extractor of a report)."""
    return {"preset": preset, "variant": variant, "commit": git_commit(), "dataset": dataset,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
