rule evaluate:
    """FID / IS / KID of a variant's samples against the held-out test images."""
    input:
        samples="results/sample/{preset}/{variant}/samples.h5",
        real="results/data/{preset}/test.h5",
        classifier="results/classifier/{preset}/classifier.pt",
        classifier_metrics="results/classifier/{preset}/metrics.json",
    output:
        "results/evaluate/{preset}/{variant}/metrics.json",
    params:
        cfg=fp("evaluate"),
    threads: min(workflow.cores, CFG.workflow.threads)
    log:
        "results/logs/evaluate/{preset}-{variant}.log",
    shell:
        "{HEPTAPOD} evaluate --preset {wildcards.preset} --variant {wildcards.variant} --threads {threads}"
        " --samples {input.samples} --real {input.real} --classifier {input.classifier}"
        " --classifier-metrics {input.classifier_metrics} --out {output} 2>&1 | tee {log}"


rule bench:
    """Throughput benchmark (not part of 'ablations'): results/bench/<preset>.json."""
    input:
        "results/latents/{preset}/vq/train.h5",
    output:
        "results/bench/{preset}.json",
    params:
        cfg=fp("model", "train", "bench"),
    threads: workflow.cores
    log:
        "results/logs/bench/{preset}.log",
    shell:
        "{HEPTAPOD} bench --preset {wildcards.preset} --threads {threads} --latents {input}"
        " --out {output} 2>&1 | tee {log}"


rule progress:
    """Metrics of a run's EMA snapshots: the FID/IS-vs-training curves of Fig. 6-8."""
    input:
        model="results/train/{preset}/{variant}/model.pt",
        tokenizer=lambda w: paths.tokenizer(w.preset, kind_of(w)),
        real="results/data/{preset}/test.h5",
        classifier="results/classifier/{preset}/classifier.pt",
    output:
        "results/evaluate/{preset}/{variant}/progress.json",
    params:
        cfg=fp("sample", "evaluate", variant=True),
        train_dir=lambda w: paths.train_dir(w.preset, w.variant),
    threads: min(workflow.cores, CFG.workflow.threads)
    resources:
        gpu=GPU_JOB,
    log:
        "results/logs/progress/{preset}-{variant}.log",
    shell:
        "{HEPTAPOD} progress --preset {wildcards.preset} --variant {wildcards.variant} --threads {threads}"
        " --train-dir {params.train_dir} --tokenizer {input.tokenizer} --real {input.real}"
        " --classifier {input.classifier} --out {output} 2>&1 | tee {log}"
