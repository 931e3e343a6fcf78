"""Every output path of the pipeline, built in one place (Snakemake imports this module)."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path("results")


def data(preset: str, split: str) -> Path:
    return RESULTS / "data" / preset / f"{split}.h5"


def classifier(preset: str) -> Path:
    return RESULTS / "classifier" / preset / "classifier.pt"


def classifier_metrics(preset: str) -> Path:
    return RESULTS / "classifier" / preset / "metrics.json"


def tokenizer(preset: str, kind: str) -> Path:
    return RESULTS / "tokenizer" / preset / kind / "tokenizer.pt"


def tokenizer_metrics(preset: str, kind: str) -> Path:
    return RESULTS / "tokenizer" / preset / kind / "metrics.json"


def tokenizer_recon(preset: str, kind: str) -> Path:
    return RESULTS / "tokenizer" / preset / kind / "recon.png"


def latents(preset: str, kind: str, split: str) -> Path:
    return RESULTS / "latents" / preset / kind / f"{split}.h5"


def latents_part(preset: str, kind: str, split: str, shard: int, shards: int) -> Path:
    return RESULTS / "latents" / preset / kind / f"{split}.part-{shard}-of-{shards}.h5"


def train_dir(preset: str, variant: str) -> Path:
    return RESULTS / "train" / preset / variant


def model(preset: str, variant: str) -> Path:
    return train_dir(preset, variant) / "model.pt"


def train_log(preset: str, variant: str) -> Path:
    return train_dir(preset, variant) / "log.jsonl"


def samples(preset: str, variant: str) -> Path:
    return RESULTS / "sample" / preset / variant / "samples.h5"


def sample_part(preset: str, variant: str, shard: int, shards: int) -> Path:
    return RESULTS / "sample" / preset / variant / f"part-{shard}-of-{shards}.h5"


def samples_npz(preset: str, variant: str) -> Path:
    return RESULTS / "sample" / preset / variant / "samples.npz"


def sample_grid(preset: str, variant: str) -> Path:
    return RESULTS / "sample" / preset / variant / "grid.png"


def eval_metrics(preset: str, variant: str) -> Path:
    return RESULTS / "evaluate" / preset / variant / "metrics.json"


def likelihood(preset: str, variant: str) -> Path:
    return RESULTS / "evaluate" / preset / variant / "likelihood.json"


def noise_floor(preset: str) -> Path:
    return RESULTS / "evaluate" / preset / "noise_floor.json"


def progress(preset: str, variant: str) -> Path:
    return RESULTS / "evaluate" / preset / variant / "progress.json"


def report_dir(preset: str) -> Path:
    return RESULTS / "report" / preset


def family_report(preset: str, family: str, ext: str) -> Path:
    return report_dir(preset) / f"{family}.{ext}"


def bench(preset: str) -> Path:
    return RESULTS / "bench" / f"{preset}.json"


def logs(stage: str, preset: str, variant: str | None = None) -> Path:
    name = f"{preset}-{variant}" if variant else preset
    return RESULTS / "logs" / stage / f"{name}.log"
