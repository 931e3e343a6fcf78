# Heptapod pipeline. Main target on the embedded default:  snakemake --cores all ablations
# Another preset:  snakemake --cores all ablations --config preset=smoke
# One paper table or figure:  snakemake --cores all table1   (table2, table4, fig6, fig7, fig8)
# On a SLURM cluster:  snakemake --workflow-profile workflow/profiles/slurm ablations --config preset=...
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "params.yaml"

validate(config, "workflow/schemas/params.schema.yaml")

from heptapod import paths
from heptapod.config import (CURVE_FAMILIES, FAMILIES, fingerprint, published_checkpoint, resolve,
                             rule_resources, tokenizer_kind)

# The interpreter running Snakemake runs the stages too: no PATH or activation needed.
HEPTAPOD = f"{sys.executable} -m heptapod"
PRESET = config["preset"]
CFG = resolve(config, PRESET)


def fp(*sections, variant=None):
    """Params of the given sections, for Snakemake's params-change rerun trigger."""
    return lambda w: fingerprint(resolve(config, w.preset, w.variant if variant else None), *sections)


def cfg_of(w):
    return resolve(config, w.preset, getattr(w, "variant", None))


def kind_of(w):
    """Tokenizer kind ('vq' or 'kl') a run's generator reads."""
    return tokenizer_kind(cfg_of(w))


def threads(rule):
    """A job's threads: the rule's `resources.<rule>.cpus`, capped by --cores when run locally."""
    cpus = getattr(CFG.resources, rule).cpus
    return min(workflow.cores, cpus) if workflow.cores else cpus


def resources(rule):
    """Memory, runtime, GPUs, partition and account of a rule's jobs (params.yaml `resources`)."""
    return rule_resources(CFG, rule)


def reference(w, real=True, classifier_metrics=False):
    """Held-out images and the dataset classifier, where the evaluation set-up needs them: not
    with `evaluate.reference_stats` (FID against a statistics file), not with Inception weights."""
    ev = resolve(config, w.preset).evaluate
    out = {"real": paths.data(w.preset, "test")} if real and not ev.reference_stats else {}
    if real and ev.reference_stats:
        out["reference_stats"] = ev.reference_stats  # declared, so a missing file is named up front
    if ev.inception_weights:
        out["inception_weights"] = ev.inception_weights
    else:
        out["classifier"] = paths.classifier(w.preset)
        if classifier_metrics:
            out["classifier_metrics"] = paths.classifier_metrics(w.preset)
    return out


def reference_args(w, input):
    return "".join(f" --{k.replace('_', '-')} {input[k]}" for k in ("real", "classifier", "classifier_metrics")
                   if k in input.keys())


wildcard_constraints:
    preset=r"[^/]+",
    variant=r"[^/]+",
    split="train|test",
    kind="vq|kl",
    shard=r"\d+",
    shards=r"\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# One target per paper table / figure of the preset (nothing to do where it lists no runs).
for family in FAMILIES:

    rule:
        name:
            family
        input:
            family_outputs(PRESET, family),


rule ablations:
    """Every family of the preset trained, sampled, evaluated and reported."""
    input:
        paths.report_dir(PRESET) / "README.md",
        # the default preset's report is also the results folder's front page
        ["results/README.md"] if PRESET == "default" else [],


rule speed:
    """Speed vs quality of k positions per sampling step (results/report/<preset>/speed.md)."""
    input:
        paths.report_dir(PRESET) / "speed.md" if CFG.workflow.table2 else [],


rule stability:
    """A rerun preset (workflow.rerun_of set): which of the original's verdicts hold."""
    input:
        paths.report_dir(PRESET) / "stability.md" if CFG.workflow.rerun_of else [],


rule all:
    input:
        rules.ablations.input,
        rules.speed.input,
        paths.bench(PRESET),
