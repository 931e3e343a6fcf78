def family_outputs(preset, family):
    """The files of one family's report (none where the preset lists no runs for it)."""
    if not resolve(config, preset).workflow.family_runs(family):
        return []
    return [paths.family_report(preset, family, ext) for ext in ("md", "csv", "json", "png")]


def family_inputs(w):
    cfg = resolve(config, w.preset)
    runs = cfg.workflow.family_runs(w.family)
    # a family without seed replicates judges its differences with Table 1's seed noise
    scored = list(dict.fromkeys(runs + cfg.workflow.noise_runs(w.family)))
    inputs = {
        "metrics": [paths.eval_metrics(w.preset, r) for r in scored],
        "likelihood": [paths.likelihood(w.preset, r) for r in scored],
        "floor": [paths.noise_floor(w.preset)],
        "models": [paths.model(w.preset, r) for r in scored],
        "logs": [paths.train_log(w.preset, r) for r in scored],
        "progress": [paths.progress(w.preset, r) for r in runs if w.family in CURVE_FAMILIES],
    }
    if w.family == "table2":  # the headline runs' samples, also in the formats of the field
        inputs["export"] = [paths.samples_npz(w.preset, r) for r in runs]
    return inputs


def report_inputs(w):
    cfg = resolve(config, w.preset)
    runs = cfg.workflow.runs()
    kinds = sorted({tokenizer_kind(resolve(config, w.preset, r)) for r in runs}, reverse=True)
    return {
        "families": [f for family in cfg.workflow.families() for f in family_outputs(w.preset, family)],
        "grids": [paths.sample_grid(w.preset, r) for r in runs],
        "likelihood": [paths.likelihood(w.preset, r) for r in runs],
        "floor": [paths.noise_floor(w.preset)],
        "tokenizers": [paths.tokenizer_metrics(w.preset, k) for k in kinds],
        "recon": [paths.tokenizer_recon(w.preset, k) for k in kinds],
        "classifier": [] if cfg.evaluate.inception_weights else [paths.classifier_metrics(w.preset)],
    }


rule report_family:
    """Table, plot and paper comparison of one family: results/report/<preset>/<family>.*"""
    input:
        unpack(family_inputs),
    output:
        md="results/report/{preset}/{family}.md",
        csv="results/report/{preset}/{family}.csv",
        json="results/report/{preset}/{family}.json",
        png="results/report/{preset}/{family}.png",
    wildcard_constraints:
        family="|".join(FAMILIES),
    params:
        cfg=lambda w: fingerprint(resolve(config, w.preset), "workflow", "data"),
    threads: 1
    resources:
        **resources("report"),
    log:
        "results/logs/report/{preset}-{family}.log",
    shell:
        "{HEPTAPOD} report-family --preset {wildcards.preset} --family {wildcards.family}"
        " --out-dir results/report/{wildcards.preset} 2>&1 | tee {log}"


rule report:
    """The preset's README: every family, tokenizers, training curves and samples."""
    input:
        unpack(report_inputs),
    output:
        readme="results/report/{preset}/README.md",
        csv="results/report/{preset}/runs.csv",
        json="results/report/{preset}/metrics.json",
        curves="results/report/{preset}/training_curves.png",
        samples="results/report/{preset}/samples.png",
    params:
        cfg=lambda w: fingerprint(resolve(config, w.preset), "workflow", "data"),
    threads: 1
    resources:
        **resources("report"),
    log:
        "results/logs/report/{preset}.log",
    shell:
        "{HEPTAPOD} report --preset {wildcards.preset} --out-dir results/report/{wildcards.preset}"
        " 2>&1 | tee {log}"


rule index:
    """results/README.md: the default preset's report, readable from the results folder."""
    input:
        "results/report/default/README.md",
    output:
        "results/README.md",
    threads: 1
    resources:
        **resources("report"),
    log:
        "results/logs/report/index.log",
    shell:
        "{HEPTAPOD} index --report {input} --out {output} 2>&1 | tee {log}"


rule stability_report:
    """Which verdicts of the preset named by workflow.rerun_of hold in this rerun of it."""
    input:
        first=lambda w: [paths.family_report(resolve(config, w.preset).workflow.rerun_of, f, "json")
                         for f in resolve(config, w.preset).workflow.families()],
        second=lambda w: [paths.family_report(w.preset, f, "json")
                          for f in resolve(config, w.preset).workflow.families()],
    output:
        md="results/report/{preset}/stability.md",
        json="results/report/{preset}/stability.json",
    params:
        first=lambda w: resolve(config, w.preset).workflow.rerun_of,
    threads: 1
    resources:
        **resources("report"),
    log:
        "results/logs/report/{preset}-stability.log",
    shell:
        "{HEPTAPOD} stability --preset {wildcards.preset}"
        " --first results/report/{params.first} --second results/report/{wildcards.preset}"
        " --out {output.md} 2>&1 | tee {log}"
