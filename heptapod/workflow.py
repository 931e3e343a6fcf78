"""What the Snakemake rules ask of the configuration: one object, built once by the Snakefile.

Every question a rule asks (its threads, resources and params fingerprint, which inputs a job
reads, which files a target needs) is answered here from the configuration Snakemake resolved
(params.yaml, then --configfile, then --config), for the job's own ``{preset}`` wildcard. The
same resolved configuration is written to a file that every job loads (``write_resolved``), so
what the DAG was planned with is what the jobs run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from heptapod import paths
from heptapod.config import (CURVE_FAMILIES, Config, RuleResources, coerce_strings, fingerprint, longer_chain,
                             resolve, tokenizer_kind, validate_params)
from heptapod.records import matching_record, pipeline_files
from heptapod.utils.io import write_text

# Where the resolved configurations go (Snakemake's own folder: ignored, not a result).
RESOLVED_DIR = Path(".snakemake") / "heptapod"
# The reference inputs an evaluation can take, and the CLI option each one becomes.
REFERENCE_KEYS = ("real", "classifier", "classifier_metrics")


def rule_resources(cfg: Config, rule: str) -> dict[str, int | str]:
    """Snakemake resources of one rule's jobs, under the names the SLURM executor reads.

    Every key is always present, so a rule declares the same names for every preset: ``gpu`` 0
    on a CPU-only preset (it also feeds the local ``--resources gpu=K`` limit), and an empty
    partition or account, which the executor leaves out of the sbatch call.
    """
    r: RuleResources = getattr(cfg.resources, rule)
    return {"mem_mb": r.mem_mb, "runtime": r.runtime, "cpus_per_task": r.cpus,
            "gpu": r.gpus if cfg.workflow.device != "cpu" else 0,
            "slurm_partition": r.partition or cfg.resources.partition or "",
            "slurm_account": cfg.resources.account or ""}


class Pipeline:
    """The resolved configuration, as the rules ask for it."""

    def __init__(self, params: dict, cores: int | None):
        params = coerce_strings(params)
        validate_params(params, "the resolved configuration (params.yaml + --configfile + --config)")
        self.params = params
        self.cores = cores
        self._configs: dict[tuple[str, str | None], Config] = {}
        self._records: dict[tuple[str, str], dict[str, Path] | None] = {}

    # ------------------------------------------------------------------ configuration
    def config(self, preset: str, variant: str | None = None) -> Config:
        key = (preset, variant)
        if key not in self._configs:
            self._configs[key] = resolve(self.params, preset, variant)
        return self._configs[key]

    def of(self, w) -> Config:
        """A job's configuration: its preset (the configured one for a rule without a preset
        wildcard), and its run where the rule has a variant."""
        return self.config(getattr(w, "preset", None) or self.params["preset"], getattr(w, "variant", None))

    def write_resolved(self) -> Path:
        """The resolved configuration as a file named by its content, for every job to load: two
        workflows with different overrides never read each other's file."""
        text = json.dumps(self.params, sort_keys=True, indent=1)
        path = RESOLVED_DIR / f"params-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
        if not path.exists():
            write_text(path, text)
        return path

    def export_to_jobs(self) -> None:
        """Set what every job's shell command reads: $HEPTAPOD_PARAMS, the resolved configuration
        file, and `python` on the PATH, the interpreter running Snakemake (with --use-conda, the
        rule's environment comes first). Cluster jobs re-read the Snakefile and set both again."""
        os.environ["HEPTAPOD_PARAMS"] = str(self.write_resolved())
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    # ------------------------------------------------------------------ rule settings
    def fingerprint(self, *sections: str) -> Callable:
        """Params of the given sections (of the job's run), for the params-change rerun trigger."""
        return lambda w: fingerprint(self.of(w), *sections)

    def threads(self, rule: str) -> Callable:
        """A job's threads: ``resources.<rule>.cpus`` of its preset, capped by --cores locally."""
        def threads(w) -> int:
            cpus = getattr(self.of(w).resources, rule).cpus
            return min(self.cores, cpus) if self.cores else cpus
        return threads

    def resources(self, rule: str) -> dict[str, Callable]:
        """Memory, runtime, CPUs, GPUs, partition and account of a rule's jobs, from their preset."""
        names = rule_resources(self.config(self.params["preset"]), rule)  # the same keys for every preset
        return {k: (lambda w, k=k: rule_resources(self.of(w), rule)[k]) for k in names}

    def train_processes(self, w) -> int:
        """Processes of a training job: one per GPU (DDP under torchrun), one on the CPU."""
        return max(1, rule_resources(self.of(w), "train")["gpu"])

    # ------------------------------------------------------------------ inputs
    def kind(self, w) -> str:
        """Tokenizer kind ('vq' or 'kl') a run's generator reads."""
        return tokenizer_kind(self.of(w))

    def tokenizer_checkpoint(self, w) -> str | None:
        """The file a preset uses for ``{kind}`` instead of training one (tokenizer.vq/kl_checkpoint):
        a released checkpoint to import, or a trained tokenizer to pin."""
        tc = self.config(w.preset).tokenizer
        return {"vq": tc.vq_checkpoint, "kl": tc.kl_checkpoint}[w.kind]

    def tokenizer_source(self, w) -> str:
        """A tokenizer file to use, else the train split to train on."""
        return self.tokenizer_checkpoint(w) or str(paths.data.of(w.preset, "train"))

    def tokenizer_source_arg(self, w, input) -> str:
        return ("--checkpoint " if self.tokenizer_checkpoint(w) else "--images ") + str(input.source)

    def pinned_classifier(self, w) -> dict[str, str]:
        """classifier.checkpoint as an input, so that a missing file is named before any job runs."""
        path = self.config(w.preset).classifier.checkpoint
        return {"checkpoint": path} if path else {}

    def reference(self, w, real: bool = True, classifier_metrics: bool = False) -> dict[str, Any]:
        """Held-out images and the dataset classifier, where the evaluation set-up needs them:
        not with `evaluate.reference_stats` (FID against a statistics file), not with Inception."""
        ev = self.config(w.preset).evaluate
        out: dict[str, Any] = {}
        if real:
            # declared either way, so a missing statistics file is named up front
            out = {"reference_stats": ev.reference_stats} if ev.reference_stats else {"real": paths.data.of(w.preset, "test")}
        if ev.inception_weights:
            out["inception_weights"] = ev.inception_weights
        else:
            out["classifier"] = paths.classifier.of(w.preset)
            if classifier_metrics:
                out["classifier_metrics"] = paths.classifier_metrics.of(w.preset)
        return out

    @staticmethod
    def reference_args(w, input) -> str:
        """The reference inputs a job got, as CLI options."""
        return "".join(f" --{k.replace('_', '-')} {input[k]}" for k in REFERENCE_KEYS if k in input.keys())

    def latent_parts(self, w) -> list[Path]:
        k = self.config(w.preset).latents.shards
        return [paths.latents_part.of(w.preset, w.kind, w.split, i, k) for i in range(k)]

    def sample_parts(self, w) -> list[Path]:
        k = self.of(w).sample.shards
        return [paths.sample_part.of(w.preset, w.variant, i, k) for i in range(k)]

    def run_latents(self, split: str) -> Callable:
        return lambda w: paths.latents.of(w.preset, self.kind(w), split)

    def run_tokenizer(self, w) -> Path:
        return paths.tokenizer.of(w.preset, self.kind(w))

    def preset_tokenizers(self, w) -> dict[str, Path]:
        """The tokenizers the preset's runs read, as named inputs ``tokenizer_<kind>``."""
        runs = self.config(w.preset).workflow.runs()
        kinds = dict.fromkeys(tokenizer_kind(self.config(w.preset, run)) for run in runs)
        return {f"tokenizer_{kind}": paths.tokenizer.of(w.preset, kind) for kind in kinds}

    @staticmethod
    def tokenizer_args(w, input) -> str:
        return "".join(f" --tokenizer {k.removeprefix('tokenizer_')}={input[k]}"
                       for k in input.keys() if k.startswith("tokenizer_"))

    # ------------------------------------------------------------------ targets and reports
    def family_outputs(self, preset: str, family: str) -> list[Path]:
        """The files of one family's report (none where the preset lists no runs for it)."""
        if not self.config(preset).workflow.family_runs(family):
            return []
        return [paths.family_report.of(preset, family, ext) for ext in ("md", "csv", "json", "png")]

    def family_runs(self, w) -> dict[str, list[str]]:
        """A family's runs, and the runs whose seed spread judges it where it has no replicates
        of its own (Table 1's); the report reads their files in the order runs + the others."""
        wf = self.config(w.preset).workflow
        return {"runs": wf.family_runs(w.family), "noise_runs": wf.noise_runs(w.family)}

    def family_inputs(self, w) -> dict[str, list[Path]]:
        named = self.family_runs(w)
        scored = list(dict.fromkeys(named["runs"] + named["noise_runs"]))
        curves = named["runs"] if w.family in CURVE_FAMILIES else []
        inputs = {
            **self.run_file_inputs(w.preset, scored),
            "floor": [paths.noise_floor.of(w.preset)],
            "progress": [self.run_file(w.preset, r, "progress") for r in curves],
        }
        if w.family == "table2":  # the headline runs' samples, also in the formats of the field
            inputs["export"] = [paths.samples_npz.of(w.preset, r) for r in named["runs"]]
        return inputs

    def run_file(self, preset: str, run: str, kind: str) -> Path:
        """One file a report reads about a run (a key of ``records.RECORD_FILES``): from the run's
        committed record where the preset uses records and one matches the run's parameters, else
        the pipeline's own, which Snakemake then trains, samples and scores the run for."""
        key = (preset, run)
        if key not in self._records:
            folder = paths.record_dir.of(preset, run)
            self._records[key] = matching_record(self.config(preset, run), folder) \
                if self.config(preset).workflow.records else None
        if self._records[key] and kind in self._records[key]:
            return self._records[key][kind]
        return pipeline_files(self.config(preset), preset, run, all_kinds=True)[kind]

    def run_file_inputs(self, preset: str, runs: list[str]) -> dict[str, list[Path]]:
        """The files of each run a report reads (``heptapod.report.runs.RunFiles``), in run order."""
        return {flag: [self.run_file(preset, r, kind) for r in runs]
                for flag, kind in (("metrics", "metrics"), ("likelihood", "likelihood"), ("models", "model"),
                                   ("logs", "log"))}

    def report_runs(self, w) -> list[str]:
        return self.config(w.preset).workflow.runs()

    def report_inputs(self, w) -> dict[str, list[Path]]:
        cfg = self.config(w.preset)
        runs = self.report_runs(w)
        kinds = sorted({tokenizer_kind(self.config(w.preset, r)) for r in runs}, reverse=True)
        families = [f for f in cfg.workflow.families() if cfg.workflow.family_runs(f)]
        return {
            **self.run_file_inputs(w.preset, runs),
            "grids": [self.run_file(w.preset, r, "grid") for r in runs],
            "families": [paths.family_report.of(w.preset, f, "json") for f in families],
            "family_files": [p for f in families for p in self.family_outputs(w.preset, f)],
            "floor": [paths.noise_floor.of(w.preset)],
            "tokenizers": [paths.tokenizer_metrics.of(w.preset, k) for k in kinds],
            "recons": [paths.tokenizer_recon.of(w.preset, k) for k in kinds],
            "classifier": [] if cfg.evaluate.inception_weights else [paths.classifier_metrics.of(w.preset)],
        }

    # ------------------------------------------------------------------ analyses
    ANALYSES = ("attention", "similarity", "probe", "steps")
    STEPS_FAMILIES = ("table1", "fig8", "fig7")  # the NLL by generation step's runs, each once

    def analysis_outputs(self, preset: str) -> list[Path]:
        """The analyses of a preset's runs (none where it trains no Table 1 runs)."""
        if not self.config(preset).workflow.family_runs("table1"):
            return []
        return [paths.analysis.of(preset, name, ext) for name in self.ANALYSES for ext in ("md", "json", "png")]

    def analysis_runs(self, w) -> list[str]:
        """Attention distance and the probe: Table 1's runs (every seed); similarity: its own list;
        NLL by step: Table 1's, Fig. 8's and Fig. 7's (do denser supervision and local windows close
        the 2D head's gap where it lies?)."""
        cfg = self.config(w.preset)
        if w.name == "similarity":
            return cfg.analysis.similarity_runs
        families = self.STEPS_FAMILIES if w.name == "steps" else ("table1",)
        return list(dict.fromkeys(r for f in families for r in cfg.workflow.family_runs(f)))

    def analysis_inputs(self, w) -> dict[str, list[Path]]:
        """Each analysed run's model and test latents (its own tokenizer's), and what the
        analysis reads besides: the train latents (probe) or the test images (similarity). NLL by
        step reads only each run's scores and model summary, so a run's record serves for it."""
        runs = self.analysis_runs(w)
        if w.name == "steps":
            files = self.run_file_inputs(w.preset, runs)
            return {"models": files["models"], "likelihood": files["likelihood"], "latents": []}
        kinds = [tokenizer_kind(self.config(w.preset, r)) for r in runs]
        inputs = {"models": [paths.model.of(w.preset, r) for r in runs],
                  "latents": [paths.latents.of(w.preset, k, "test") for k in kinds]}
        if w.name == "probe":
            inputs["train"] = sorted({paths.latents.of(w.preset, k, "train") for k in kinds})
        if w.name == "similarity":
            inputs["images"] = [paths.data.of(w.preset, "test")]
        return inputs

    def headline_run(self, w) -> str:
        return self.config(w.preset).workflow.table2[0]

    def speed_inputs(self, w) -> dict[str, Any]:
        """The headline run, the 1D baselines of Table 1 (seed 0) and Table 1's noise, if any."""
        wf = self.config(w.preset).workflow
        run = self.headline_run(w)
        ones = [r for r in wf.family_runs("table1")
                if "@" not in r and self.config(w.preset, r).model.head == "1d"]
        inputs = {"model": paths.model.of(w.preset, run),
                  "tokenizer": paths.tokenizer.of(w.preset, tokenizer_kind(self.config(w.preset, run))),
                  "baselines": [paths.model.of(w.preset, r) for r in ones]}
        if wf.family_runs("table1"):
            inputs["noise"] = paths.family_report.of(w.preset, "table1", "json")
        return inputs

    def compared_preset(self, w) -> str:
        """The preset a 'stability' (rerun_of) or 'datasets' (compare_to) report sets this one beside."""
        wf = self.config(w.preset).workflow
        return wf.rerun_of if w.name == "stability" else wf.compare_to

    def agreement_inputs(self, w) -> dict[str, list[Path]]:
        """Each family's verdicts in the compared preset and in this one; for a rerun scored by
        a dataset classifier, also each run's FID in both and its rerun samples scored by the
        first run's classifier (which part of a move the extractor made)."""
        cfg, first = self.config(w.preset), self.compared_preset(w)
        families = list(cfg.workflow.families())
        out = {"first": [paths.family_report.of(first, f, "json") for f in families],
               "second": [paths.family_report.of(w.preset, f, "json") for f in families]}
        if self.splits_extractor(w):
            runs = cfg.workflow.runs()
            out |= {"first_metrics": [paths.eval_metrics.of(first, r) for r in runs],
                    "second_metrics": [paths.eval_metrics.of(w.preset, r) for r in runs],
                    "first_extractor": [paths.eval_first_extractor.of(w.preset, r) for r in runs]}
        return out

    def splits_extractor(self, w) -> bool:
        """Whether a stability report can split each FID move into extractor and generator: a
        rerun (not another data set) whose FID comes from a dataset classifier that the two runs
        do not share (each trains its own)."""
        cfg = self.config(w.preset)
        if w.name != "stability" or cfg.evaluate.inception_weights or cfg.evaluate.reference_stats:
            return False
        pinned = cfg.classifier.checkpoint
        return not (pinned and pinned == self.config(cfg.workflow.rerun_of).classifier.checkpoint)

    def extractor_args(self, w, input) -> str:
        """The per-run FID files of a stability report that splits each move (splits_extractor), as CLI options."""
        if not self.splits_extractor(w):
            return ""
        files = "".join(f" --{k.replace('_', '-')} {' '.join(map(str, input[k]))}"
                        for k in ("first_metrics", "second_metrics", "first_extractor"))
        return f" --runs {' '.join(self.config(w.preset).workflow.runs())}{files}"

    def first_extractor(self, w) -> dict[str, Path]:
        """The rerun's held-out images and the first run's dataset classifier (workflow.rerun_of)."""
        first = self.config(w.preset).workflow.rerun_of
        if not first:
            raise ValueError(f"preset '{w.preset}' sets no workflow.rerun_of: no first run's classifier")
        return {"real": paths.data.of(w.preset, "test"), "classifier": paths.classifier.of(first),
                "classifier_metrics": paths.classifier_metrics.of(first)}

    def convergence_chain(self, w) -> list[str]:
        """This preset, the one it trains longer (workflow.longer_of), ..., the chain's first."""
        return longer_chain(self.params, w.preset)

    def convergence_runs(self, w) -> dict[str, list[str]]:
        """This preset's runs (their namesakes in the preset it trains longer); every Table 1 run
        of the chain's first preset (namesakes and seed replicates: the noise), and its density
        sweep's other runs (Fig. 8: set beside the chain at equal compute)."""
        chain = self.convergence_chain(w)
        runs = self.config(w.preset).workflow.runs()
        first = self.config(chain[-1]).workflow
        table1 = first.family_runs("table1")
        density = [r for r in first.family_runs("fig8") if r not in table1]
        return {"runs": runs, "first_runs": table1 + density, "density_runs": density}

    def convergence_inputs(self, w) -> dict[str, list[Path]]:
        """The runs' files in this preset, the one it trains longer and the chain's first; the
        three's test latent stores, the first's floor, each one's NLL by generation step and the
        link before's report."""
        chain, named = self.convergence_chain(w), self.convergence_runs(w)
        kind = tokenizer_kind(self.config(w.preset, named["runs"][0]))
        # held-out NLL by generation step (shorter, this, the first where it is not the shorter):
        # discrete tokens only, the others have no likelihood to split
        discrete = self.config(w.preset, named["runs"][0]).model.tokens == "discrete"
        steps = [paths.analysis.of(p, "steps", "json") for p in (chain[1], chain[0], *chain[2:][-1:])] \
            if discrete else []
        return {**self.run_file_inputs(w.preset, named["runs"]),
                **{f"shorter_{k}": v for k, v in self.run_file_inputs(chain[1], named["runs"]).items()},
                **{f"first_{k}": v for k, v in self.run_file_inputs(chain[-1], named["first_runs"]).items()},
                "latents": [paths.latents.of(w.preset, kind, "test")],
                "shorter_latents": [paths.latents.of(chain[1], kind, "test")],
                "first_latents": [paths.latents.of(chain[-1], kind, "test")],
                "first_floor": [paths.noise_floor.of(chain[-1])], "steps": steps,
                # the link before (where the shorter preset is not the first): its noise carries over
                "earlier_link": [paths.report_file.of(chain[1], "convergence.json")] if len(chain) > 2 else []}

    def bench_latents(self, w) -> Path:
        """The bench's model reads the preset's own tokens: VQ codes or KL latents."""
        return paths.latents.of(w.preset, tokenizer_kind(self.config(w.preset)), "train")
