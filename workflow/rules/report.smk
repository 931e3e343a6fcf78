def report_inputs(w):
    cfg = resolve(config, w.preset)
    variants = cfg.workflow.variants
    return {
        "metrics": [paths.eval_metrics(w.preset, v) for v in variants],
        "models": [paths.model(w.preset, v) for v in variants],
        "logs": [paths.train_log(w.preset, v) for v in variants],
        "grids": [paths.sample_grid(w.preset, v) for v in variants],
        "tokenizer": paths.tokenizer_metrics(w.preset),
        "recon": paths.tokenizer_recon(w.preset),
        "classifier": paths.classifier_metrics(w.preset),
    }


rule report:
    input:
        unpack(report_inputs),
    output:
        readme="results/report/{preset}/README.md",
        csv="results/report/{preset}/metrics.csv",
        json="results/report/{preset}/metrics.json",
        curve="results/report/{preset}/training_curve.png",
    params:
        cfg=lambda w: fingerprint(resolve(config, w.preset), "workflow"),
    log:
        "results/logs/report/{preset}.log",
    shell:
        "{HEPTAPOD} report --preset {wildcards.preset} --out-dir results/report/{wildcards.preset}"
        " 2>&1 | tee {log}"
