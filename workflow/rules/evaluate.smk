rule evaluate:
    """FID / IS / KID of a run's samples (vs held-out images, or vs reference statistics)."""
    input:
        unpack(lambda w: reference(w, classifier_metrics=True)),
        samples="results/sample/{preset}/{variant}/samples.h5",
    output:
        "results/evaluate/{preset}/{variant}/metrics.json",
    params:
        cfg=fp("evaluate"),
        reference=reference_args,
    threads: threads("evaluate")
    resources:
        **resources("evaluate"),
    log:
        "results/logs/evaluate/{preset}-{variant}.log",
    shell:
        "{HEPTAPOD} evaluate --preset {wildcards.preset} --variant {wildcards.variant} --threads {threads}"
        " --samples {input.samples}{params.reference} --out {output} 2>&1 | tee {log}"


rule progress:
    """Metrics of a run's EMA snapshots: the FID/IS-vs-training curves of Fig. 6-8."""
    input:
        unpack(reference),
        model="results/train/{preset}/{variant}/model.pt",
        tokenizer=lambda w: paths.tokenizer(w.preset, kind_of(w)),
    output:
        "results/evaluate/{preset}/{variant}/progress.json",
    params:
        cfg=fp("sample", "evaluate", variant=True),
        train_dir=lambda w: paths.train_dir(w.preset, w.variant),
        reference=reference_args,
    threads: threads("progress")
    resources:
        **resources("progress"),
    log:
        "results/logs/progress/{preset}-{variant}.log",
    shell:
        "{HEPTAPOD} progress --preset {wildcards.preset} --variant {wildcards.variant} --threads {threads}"
        " --train-dir {params.train_dir} --tokenizer {input.tokenizer}{params.reference}"
        " --out {output} 2>&1 | tee {log}"


rule bench:
    """Throughput benchmark (not part of 'ablations'): results/bench/<preset>.json."""
    input:
        "results/latents/{preset}/vq/train.h5",
    output:
        "results/bench/{preset}.json",
    params:
        cfg=fp("model", "train", "bench"),
    threads: threads("bench")
    resources:
        **resources("bench"),
    log:
        "results/logs/bench/{preset}.log",
    shell:
        "{HEPTAPOD} bench --preset {wildcards.preset} --threads {threads} --latents {input}"
        " --out {output} 2>&1 | tee {log}"
