"""Typed configuration: one frozen dataclass per ``params.yaml`` section.

``params.yaml`` is the single source of truth. Its layout::

    preset: default            # preset used when none is named
    defaults: {section: {key: value}}   # every knob, the embedded CPU default
    presets: {name: {section: {key: value}}}   # partial overrides of ``defaults``
    variants: {name: {model|train: {key: value}}}   # ablation variants, overrides of a preset

The JSON schema (``workflow/schemas/params.schema.yaml``) is generated from these dataclasses
(``heptapod schema``), so the schema, the loader and the code can never disagree.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """A params file, preset or variant is malformed; the message names the key."""


def _doc(text: str) -> Any:
    return field(metadata={"doc": text})


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _doc("'fashion_mnist' (IDX files) or 'image_folder' (class sub-folders).")
    root: str | None = _doc(
        "Folder holding the data; null searches the usual places (Debian's dataset package)."
    )
    image_size: int = _doc("Side of the square images fed to the tokenizer (pixels).")
    channels: int = _doc("Image channels: 1 (grayscale) or 3 (RGB).")
    download: bool = _doc("Allow torchvision to download Fashion-MNIST when it is not on disk.")
    max_images: int | None = _doc("Keep only the first N images of each split (null: all).")


@dataclass(frozen=True)
class TokenizerConfig:
    codebook_size: int = _doc("VQ: number of codes (the generator's vocabulary).")
    code_dim: int = _doc("VQ: dimension of the L2-normalised codes; KL: latent channels.")
    downsample: int = _doc("Spatial downsampling factor (power of 2); grid = image_size / downsample.")
    width: int = _doc("Channels of the first conv stage (doubled at each downsampling).")
    commitment: float = _doc("VQ: weight beta of the commitment loss.")
    kl_weight: float = _doc("KL: weight of the KL term.")
    steps: int = _doc("Training steps.")
    batch_size: int = _doc("Images per training step.")
    lr: float = _doc("Adam learning rate.")
    seed: int = _doc("Seed for initialisation and data order.")
    eval_images: int = _doc("Test images reconstructed for MSE / rFID.")


@dataclass(frozen=True)
class LatentsConfig:
    batch_size: int = _doc("Images encoded per batch during extraction.")
    chunk_rows: int = _doc("HDF5 chunk size along the sample axis (also the loader's block).")
    seed: int = _doc("Seed of the row shuffle applied when writing the store.")


@dataclass(frozen=True)
class ClassifierConfig:
    steps: int = _doc("Training steps of the dataset classifier used as FID/IS feature extractor.")
    batch_size: int = _doc("Images per step.")
    lr: float = _doc("Adam learning rate.")
    width: int = _doc("Channels of the first conv layer.")
    seed: int = _doc("Seed.")


@dataclass(frozen=True)
class ModelConfig:
    width: int = _doc("Transformer width (backbone and head).")
    backbone_depth: int = _doc("Causal Transformer layers.")
    head_depth: int = _doc("Prediction-head layers.")
    num_heads: int = _doc("Attention heads.")
    mlp_ratio: float = _doc("MLP hidden size / width.")
    head: str = _doc("Prediction head: 'global' (window N), 'local' (window w) or '1d' (next token).")
    window: int = _doc("Local head: positions per chunk w, a square tile of sqrt(w) x sqrt(w).")
    order: str = _doc("Generation order: 'random' (a permutation per sample) or 'raster'.")
    tokens: str = _doc("'discrete' (VQ codes, cross-entropy) or 'continuous' (KL latents, DiffLoss).")
    diffloss_width: int = _doc("Continuous tokens: width of the DiffLoss MLP.")
    diffloss_depth: int = _doc("Continuous tokens: residual blocks of the DiffLoss MLP.")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _doc("Optimizer steps.")
    batch_size: int = _doc("Sequences per step.")
    lr: float = _doc("Peak AdamW learning rate.")
    warmup_steps: int = _doc("Linear warm-up steps.")
    lr_schedule: str = _doc("'cosine' (decay to 0 after warm-up) or 'constant'.")
    weight_decay: float = _doc("AdamW weight decay (not on biases, norms or embeddings).")
    grad_clip: float = _doc("Max global grad norm; 0 disables clipping.")
    ema_decay: float = _doc("EMA decay of the weights used for sampling.")
    supervision_density: int = _doc("n: prefix lengths per sequence at which the head is supervised.")
    grad_accum: int = _doc("Micro-batches per step and process (batch = processes x grad_accum x micro).")
    compile: bool = _doc("Wrap the model in torch.compile.")
    peak_tflops: float = _doc("Accelerator peak TFLOP/s for the MFU column of the log (0: not logged).")
    flip_prob: float = _doc("Probability of using the horizontally flipped view's tokens.")
    ckpt_every: int = _doc("Steps between resumable checkpoints.")
    snapshots: int = _doc("Evenly spaced EMA snapshots kept for FID-vs-progress curves (0: none).")
    log_every: int = _doc("Steps between metrics-log lines.")
    seed: int = _doc("Seed for initialisation, data order and all per-step randomness.")


@dataclass(frozen=True)
class SampleConfig:
    num_samples: int = _doc("Images generated for evaluation (balanced over classes).")
    batch_size: int = _doc("Images generated per batch.")
    temperature: float = _doc("Softmax temperature of the token sampler.")
    use_ema: bool = _doc("Sample from the EMA weights.")
    grid_rows: int = _doc("Rows (classes) of the PNG sample grid.")
    progress_samples: int = _doc("Images per snapshot for the FID-vs-progress curves.")
    seed: int = _doc("Seed of labels, orders and tokens.")


@dataclass(frozen=True)
class EvaluateConfig:
    inception_weights: str | None = _doc(
        "Local file of torch-fidelity's Inception weights; null uses the dataset classifier."
    )
    reference_stats: str | None = _doc(
        "npz with FID statistics 'mu', 'sigma' of the reference set (e.g. ADM's ImageNet 256 "
        "batch, with Inception weights); null: statistics of the held-out split."
    )
    kid_subset_size: int = _doc("KID subset size (clipped to the smaller image set).")
    batch_size: int = _doc("Images per feature-extraction batch.")


@dataclass(frozen=True)
class BenchConfig:
    steps: int = _doc("Timed steps per measurement (after warm-up).")
    sample_batch: int = _doc("Images per sampling measurement.")


@dataclass(frozen=True)
class WorkflowConfig:
    table1: list[str] = _doc("Sampler/order variants (paper Table 1), each trained with every seed.")
    window_sweep: list[str] = _doc("Window x density variants at constant w*n (paper Fig. 7).")
    density_sweep: list[str] = _doc("Supervision-density variants at w = N (paper Fig. 8).")
    depth_split: list[str] = _doc("Backbone/head depth splits at fixed total depth (paper Table 4).")
    token_types: list[str] = _doc("Discrete vs continuous tokens at one model size (paper Fig. 6).")
    seeds: int = _doc("Seeds 0..seeds-1 for the Table 1 variants ('name@seed' runs).")
    threads: int = _doc("Threads per train/sample/evaluate job (Snakemake runs cores/threads at once).")
    device: str = _doc("'auto' (CUDA when visible, else CPU), 'cpu' or 'cuda' (bf16 autocast on GPU).")

    def runs(self) -> list[str]:
        """Every run the 'ablations' target trains, shared runs listed once."""
        names = [f"{v}@{s}" if s else v for v in self.table1 for s in range(self.seeds)]
        names += self.window_sweep + self.density_sweep + self.depth_split + self.token_types
        return list(dict.fromkeys(names))

    def families(self) -> dict[str, list[str]]:
        return {"table1": self.table1, "window": self.window_sweep,
                "density": self.density_sweep, "depth": self.depth_split, "tokens": self.token_types}

    def progress_runs(self) -> list[str]:
        """Runs whose snapshots are evaluated for the metric-vs-training curves."""
        return list(dict.fromkeys(self.window_sweep + self.density_sweep + self.token_types))


@dataclass(frozen=True)
class Config:
    """A resolved preset (and optionally variant): every section, every key."""

    data: DataConfig
    tokenizer: TokenizerConfig
    latents: LatentsConfig
    classifier: ClassifierConfig
    model: ModelConfig
    train: TrainConfig
    sample: SampleConfig
    evaluate: EvaluateConfig
    bench: BenchConfig
    workflow: WorkflowConfig


SECTIONS: dict[str, type] = typing.get_type_hints(Config)
VARIANT_SECTIONS = ("model", "train", "sample")


# --------------------------------------------------------------------------- schema
def _type_schema(tp: Any) -> dict:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _type_schema(args[0])
        return {"type": [inner["type"], "null"]} if "type" in inner else inner
    if origin is list:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0])}
    return {
        int: {"type": "integer"},
        float: {"type": "number"},
        str: {"type": "string"},
        bool: {"type": "boolean"},
    }[tp]


def _section_schema(cls: type, required: bool) -> dict:
    hints = typing.get_type_hints(cls)
    props = {
        f.name: {**_type_schema(hints[f.name]), "description": f.metadata["doc"]}
        for f in dataclasses.fields(cls)
    }
    schema = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        schema["required"] = list(props)
    return schema


def params_schema() -> dict:
    """JSON schema of the whole ``params.yaml`` file."""

    def sections(required: bool, names=None) -> dict:
        names = names or list(SECTIONS)
        out = {
            "type": "object",
            "additionalProperties": False,
            "properties": {n: _section_schema(SECTIONS[n], required) for n in names},
        }
        if required:
            out["required"] = names
        return out

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Heptapod pipeline parameters",
        "type": "object",
        "additionalProperties": False,
        "required": ["preset", "defaults", "presets", "variants"],
        "properties": {
            "preset": {"type": "string", "description": "Preset used when none is named."},
            "defaults": {**sections(True), "description": "Every knob: the embedded CPU default."},
            "presets": {
                "type": "object",
                "description": "Named presets: partial overrides of 'defaults'.",
                "additionalProperties": sections(False),
            },
            "variants": {
                "type": "object",
                "description": "Ablation variants: partial overrides of a preset's model/train/sample.",
                "additionalProperties": sections(False, list(VARIANT_SECTIONS)),
            },
        },
    }


# --------------------------------------------------------------------------- loading
def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate_params(params: dict, source: str = "params.yaml") -> None:
    """Raise ConfigError naming the first offending key (unknown, missing or mistyped)."""
    validator = jsonschema.Draft202012Validator(params_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        raise ConfigError(
            f"{source}: unknown key {where + '.' if where != '<top level>' else ''}{extra[0]} "
            f"(allowed here: {', '.join(allowed)})"
        )
    raise ConfigError(f"{source}: {where}: {err.message}")


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and validate a params file (all presets and variants)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    validate_params(params, str(path))
    return params


def _build(raw: dict) -> Config:
    kwargs = {}
    for name, cls in SECTIONS.items():
        kwargs[name] = cls(**raw[name])
    return Config(**kwargs)


def resolve(params: dict, preset: str | None = None, variant: str | None = None) -> Config:
    """Merge ``defaults`` <- ``presets[preset]`` <- ``variants[variant]`` into a Config."""
    preset = preset or params["preset"]
    if preset != "default" and preset not in params["presets"]:
        raise ConfigError(f"unknown preset '{preset}' (known: {', '.join(preset_names(params))})")
    raw = _deep_merge(params["defaults"], params["presets"].get(preset, {}))
    if variant is not None:
        name, seed = split_run(variant)
        if name not in params["variants"]:
            raise ConfigError(
                f"unknown variant '{name}' (known: {', '.join(sorted(params['variants']))})"
            )
        raw = _deep_merge(raw, params["variants"][name])
        if seed:  # 'name@seed': another seed of the same variant
            raw["train"]["seed"] += seed
            raw["sample"]["seed"] += seed
    cfg = _build(raw)
    for run in cfg.workflow.runs():
        if split_run(run)[0] not in params["variants"]:
            raise ConfigError(f"preset '{preset}': workflow names unknown variant '{run}'")
    return cfg


def split_run(run: str) -> tuple[str, int]:
    """'2d-random@1' -> ('2d-random', 1); '2d-random' -> ('2d-random', 0)."""
    name, _, seed = run.partition("@")
    if seed and not seed.isdigit():
        raise ConfigError(f"run '{run}': the part after '@' must be a seed number")
    return name, int(seed or 0)


def preset_names(params: dict) -> list[str]:
    return sorted({"default", *params["presets"]})


def load_config(
    path: str | Path = "params.yaml", preset: str | None = None, variant: str | None = None
) -> Config:
    return resolve(load_params(path), preset, variant)


def tokenizer_kind(cfg: Config) -> str:
    """The tokenizer a generator reads: VQ for discrete tokens, KL VAE for continuous ones."""
    kinds = {"discrete": "vq", "continuous": "kl"}
    if cfg.model.tokens not in kinds:
        raise ConfigError(f"model.tokens: unknown token type '{cfg.model.tokens}' (known: discrete, continuous)")
    return kinds[cfg.model.tokens]


def section_dict(cfg: Config, *names: str) -> dict:
    """Plain dict of some sections, e.g. for Snakemake's params-change detection."""
    return {n: dataclasses.asdict(getattr(cfg, n)) for n in names}


def fingerprint(cfg: Config, *names: str) -> str:
    return json.dumps(section_dict(cfg, *names), sort_keys=True)
