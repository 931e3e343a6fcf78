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


rule likelihood:
    """Held-out NLL (bits/token) of a discrete run, or the validation diffusion loss of a continuous one."""
    input:
        model="results/train/{preset}/{variant}/model.pt",
        latents=lambda w: paths.latents(w.preset, kind_of(w), "test"),
    output:
        "results/evaluate/{preset}/{variant}/likelihood.json",
    params:
        cfg=fp("evaluate", "sample", variant=True),
    threads: threads("likelihood")
    resources:
        **resources("likelihood"),
    log:
        "results/logs/likelihood/{preset}-{variant}.log",
    shell:
        "{HEPTAPOD} likelihood --preset {wildcards.preset} --variant {wildcards.variant} --threads {threads}"
        " --model {input.model} --latents {input.latents} --out {output} 2>&1 | tee {log}"


rule noise_floor:
    """The metric's own noise: real train images vs the reference set at the runs' sample counts."""
    input:
        unpack(reference),
        train=lambda w: paths.data(w.preset, "train"),
    output:
        "results/evaluate/{preset}/noise_floor.json",
    params:
        cfg=lambda w: fingerprint(resolve(config, w.preset), "evaluate", "sample"),
        reference=reference_args,
    threads: threads("noise_floor")
    resources:
        **resources("noise_floor"),
    log:
        "results/logs/noise_floor/{preset}.log",
    shell:
        "{HEPTAPOD} noise-floor --preset {wildcards.preset} --threads {threads} --train {input.train}"
        "{params.reference} --out {output} 2>&1 | tee {log}"


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
