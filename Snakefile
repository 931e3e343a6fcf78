# Heptapod pipeline. Main target on the embedded default:  snakemake --cores all ablations
# Another preset:  snakemake --cores all ablations --config preset=smoke
# One paper table or figure:  snakemake --cores all table1   (table2, table4, fig6, fig7, fig8)
# Beyond the paper (attention distance, similarity maps, linear probe):  snakemake --cores all analysis
# On a SLURM cluster:  snakemake --workflow-profile workflow/profiles/slurm ablations --config preset=...
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


# `snakemake --report report.html`: one self-contained HTML file with every figure and caption
report: "workflow/report/workflow.rst"


from heptapod import paths
from heptapod.config import FAMILIES
from heptapod.workflow import Pipeline

# Everything the rules ask of the configuration, answered from what Snakemake resolved
# (params.yaml, --configfile, --config) for each job's own preset.
try:
    CORES = workflow.cores
except WorkflowError:  # no --cores (`--report`): nothing runs, threads are not capped
    CORES = None
P = Pipeline(config, CORES)
PRESET = config["preset"]
# Jobs load that same resolved configuration ($HEPTAPOD_PARAMS), run by this interpreter.
P.export_to_jobs()


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
include: "workflow/rules/analysis.smk"
include: "workflow/rules/targets.smk"
