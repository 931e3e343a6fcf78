def kinds(preset, runs):
    return sorted({tokenizer_kind(resolve(config, preset, r)) for r in runs}, reverse=True)


def report_inputs(w):
    wf = resolve(config, w.preset).workflow
    runs = wf.runs()
    return {
        "metrics": [paths.eval_metrics(w.preset, r) for r in runs],
        "models": [paths.model(w.preset, r) for r in runs],
        "logs": [paths.train_log(w.preset, r) for r in runs],
        "grids": [paths.sample_grid(w.preset, r) for r in runs],
        "progress": [paths.progress(w.preset, r) for r in wf.progress_runs()],
        "tokenizers": [paths.tokenizer_metrics(w.preset, k) for k in kinds(w.preset, runs)],
        "recon": [paths.tokenizer_recon(w.preset, k) for k in kinds(w.preset, runs)],
        "classifier": paths.classifier_metrics(w.preset),
    }


rule report:
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
    log:
        "results/logs/report/index.log",
    shell:
        "{HEPTAPOD} index --report {input} --out {output} 2>&1 | tee {log}"
