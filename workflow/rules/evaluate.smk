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


def speed_inputs(w):
    """The headline run, the 1D baselines of Table 1 (seed 0) and Table 1's noise, if any."""
    cfg = resolve(config, w.preset)
    run = cfg.workflow.table2[0]
    ones = [r for r in cfg.workflow.family_runs("table1")
            if "@" not in r and resolve(config, w.preset, r).model.head == "1d"]
    inputs = {"model": paths.model(w.preset, run),
              "tokenizer": paths.tokenizer(w.preset, tokenizer_kind(resolve(config, w.preset, run))),
              "baselines": [paths.model(w.preset, r) for r in ones]}
    if cfg.workflow.family_runs("table1"):
        inputs["noise"] = paths.family_report(w.preset, "table1", "json")
    return inputs


rule speed_curve:
    """Speed vs quality of k positions per sampling step for the headline run (target 'speed')."""
    input:
        unpack(reference),
        unpack(speed_inputs),
    output:
        json="results/report/{preset}/speed.json",
        md="results/report/{preset}/speed.md",
        png="results/report/{preset}/speed.png",
    params:
        cfg=lambda w: fingerprint(resolve(config, w.preset), "sample", "evaluate"),
        run=lambda w: resolve(config, w.preset).workflow.table2[0],
        baselines=lambda w, input: "".join(f" --baseline {Path(p).parent.name}={p}" for p in input.baselines),
        noise=lambda w, input: f" --noise-from {input.noise}" if "noise" in input.keys() else "",
        reference=reference_args,
    threads: threads("bench")
    resources:
        **resources("bench"),
    log:
        "results/logs/speed/{preset}.log",
    shell:
        "{HEPTAPOD} speed --preset {wildcards.preset} --variant {params.run} --threads {threads}"
        " --model {input.model} --tokenizer {input.tokenizer}{params.baselines}{params.noise}{params.reference}"
        " --out-dir results/report/{wildcards.preset} 2>&1 | tee {log}"
