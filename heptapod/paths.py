"""Every output path of the pipeline, declared once.

Each path is a ``Pattern``: the string with Snakemake wildcards that the rules declare as their
inputs and outputs, and ``.of(...)`` fills its wildcards (in order of appearance) for Python code.
"""

from __future__ import annotations

import re
from pathlib import Path


class Pattern(str):
    """A path pattern with ``{wildcard}`` fields; a plain string to Snakemake."""

    @property
    def wildcards(self) -> list[str]:
        return list(dict.fromkeys(re.findall(r"{(\w+)}", self)))

    def of(self, *values: object, **named: object) -> Path:
        """The path with its wildcards filled, positionally (in order of appearance) or by name."""
        names = self.wildcards
        if len(values) > len(names):
            raise TypeError(f"{self!r} takes {len(names)} wildcards, got {len(values)}")
        fill = {**dict(zip(names, values)), **named}
        if missing := [n for n in names if n not in fill]:
            raise TypeError(f"{self!r}: no value for {', '.join(missing)}")
        return Path(self.format(**{k: str(v) for k, v in fill.items()}))

    def partial(self, **named: object) -> "Pattern":
        """The pattern with some wildcards filled and the others kept, e.g. one file type."""
        return Pattern(self.format_map(_Keep({k: str(v) for k, v in named.items()})))


class _Keep(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


RESULTS = "results"

data = Pattern(RESULTS + "/data/{preset}/{split}.h5")
classifier = Pattern(RESULTS + "/classifier/{preset}/classifier.pt")
classifier_metrics = Pattern(RESULTS + "/classifier/{preset}/metrics.json")

tokenizer = Pattern(RESULTS + "/tokenizer/{preset}/{kind}/tokenizer.pt")
tokenizer_metrics = Pattern(RESULTS + "/tokenizer/{preset}/{kind}/metrics.json")
tokenizer_recon = Pattern(RESULTS + "/tokenizer/{preset}/{kind}/recon.png")
latents = Pattern(RESULTS + "/latents/{preset}/{kind}/{split}.h5")
latents_part = Pattern(RESULTS + "/latents/{preset}/{kind}/{split}.part-{shard}-of-{shards}.h5")

STATE_FILE = "last.pt"  # a run's resumable training state (model, EMA, optimizer, step), in its train folder
STATE_KIND = "train-state"  # the checkpoint kind that state is stamped with
MODEL_FILE = "model.pt"  # the finished run's generator

train_dir = Pattern(RESULTS + "/train/{preset}/{variant}")
model = Pattern(train_dir + "/" + MODEL_FILE)
train_log = Pattern(train_dir + "/log.jsonl")

sample_dir = Pattern(RESULTS + "/sample/{preset}/{variant}")
samples = Pattern(sample_dir + "/samples.h5")
sample_part = Pattern(sample_dir + "/part-{shard}-of-{shards}.h5")
samples_npz = Pattern(sample_dir + "/samples.npz")
samples_png = Pattern(sample_dir + "/png")
sample_grid = Pattern(sample_dir + "/grid.png")

eval_metrics = Pattern(RESULTS + "/evaluate/{preset}/{variant}/metrics.json")
# a rerun's samples scored by the first run's classifier: what the generators alone moved
eval_first_extractor = Pattern(RESULTS + "/evaluate/{preset}/{variant}/metrics_first_extractor.json")
likelihood = Pattern(RESULTS + "/evaluate/{preset}/{variant}/likelihood.json")
progress = Pattern(RESULTS + "/evaluate/{preset}/{variant}/progress.json")
noise_floor = Pattern(RESULTS + "/evaluate/{preset}/noise_floor.json")

# a finished run's files that reports read, kept in the repository (heptapod.records)
record_dir = Pattern(RESULTS + "/records/{preset}/{variant}")
# an unfinished run's training state, kept in the repository between sessions (heptapod.parking)
parked = Pattern(RESULTS + "/parked/{preset}/{variant}")

report_dir = Pattern(RESULTS + "/report/{preset}")
family_report = Pattern(report_dir + "/{family}.{ext}")
report_file = Pattern(report_dir + "/{name}")
results_index = Pattern(RESULTS + "/README.md")
analysis_dir = Pattern(report_dir + "/analysis")
analysis = Pattern(analysis_dir + "/{name}.{ext}")

bench = Pattern(RESULTS + "/bench/{preset}.json")


def log(stage: str, name: str) -> Pattern:
    """A rule's log, results/logs/<stage>/<name>.log; ``name`` holds the job's wildcards."""
    return Pattern(f"{RESULTS}/logs/{stage}/{name}.log")
