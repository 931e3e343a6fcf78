# Heptapod pipeline. Main target on the embedded default:  snakemake --cores all ablations
# Another preset:  snakemake --cores all ablations --config preset=smoke
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "params.yaml"

validate(config, "workflow/schemas/params.schema.yaml")

from heptapod import paths
from heptapod.config import fingerprint, resolve, tokenizer_kind

# The interpreter running Snakemake runs the stages too: no PATH or activation needed.
HEPTAPOD = f"{sys.executable} -m heptapod"
PRESET = config["preset"]
CFG = resolve(config, PRESET)
# GPU jobs declare one `gpu` each: `--resources gpu=K` runs K at once, and with
# HEPTAPOD_GPUS=0,1,... each job locks its own device (heptapod/utils/gpus.py).
GPU_JOB = 0 if CFG.workflow.device == "cpu" else 1


def fp(*sections, variant=None):
    """Params of the given sections, for Snakemake's params-change rerun trigger."""
    return lambda w: fingerprint(resolve(config, w.preset, w.variant if variant else None), *sections)


def kind_of(w):
    """Tokenizer kind ('vq' or 'kl') a run's generator reads."""
    return tokenizer_kind(resolve(config, w.preset, w.variant))


include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule ablations:
    """Every variant of the preset trained, sampled, evaluated and reported."""
    input:
        paths.report_dir(PRESET) / "README.md",
        # the default preset's report is also the results folder's front page
        ["results/README.md"] if PRESET == "default" else [],


rule all:
    input:
        rules.ablations.input,
        paths.bench(PRESET),
