rule evaluate:
    """FID / IS / KID of a run's samples (vs held-out images, or vs reference statistics)."""
    input:
        unpack(lambda w: P.reference(w, classifier_metrics=True)),
        samples=rules.merge_samples.output.samples,
    output:
        paths.eval_metrics,
    params:
        cfg=P.fingerprint("evaluate"),
        reference=P.reference_args,
    threads: P.threads("evaluate")
    resources:
        **P.resources("evaluate"),
    log:
        paths.log("evaluate", "{preset}-{variant}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod evaluate --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --variant {wildcards.variant} --threads {threads} --samples {input.samples}{params.reference}"
        " --out {output} 2>&1 | tee {log}"


# A rerun's samples scored by the first run's dataset classifier (workflow.rerun_of): with the
# extractor fixed, what is left of a FID move is the generator's.
use rule evaluate as evaluate_first_extractor with:
    input:
        unpack(P.first_extractor),
        samples=rules.merge_samples.output.samples,
    output:
        paths.eval_first_extractor,
    log:
        paths.log("evaluate", "{preset}-{variant}-first-extractor"),


rule likelihood:
    """Held-out NLL (bits/token) of a discrete run, or the validation diffusion loss of a continuous one."""
    input:
        model=rules.train.output.model,
        latents=P.run_latents("test"),
    output:
        paths.likelihood,
    params:
        cfg=P.fingerprint("evaluate", "sample"),
    threads: P.threads("likelihood")
    resources:
        **P.resources("likelihood"),
    log:
        paths.log("likelihood", "{preset}-{variant}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod likelihood --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --variant {wildcards.variant} --threads {threads} --model {input.model}"
        " --latents {input.latents} --out {output} 2>&1 | tee {log}"


rule noise_floor:
    """The metric's own noise: real train images vs the reference set at the runs' sample counts;
    and the tokenizer ceiling: the same images through each tokenizer the runs read."""
    input:
        unpack(P.reference),
        unpack(P.preset_tokenizers),
        train=paths.data.partial(split="train"),
    output:
        paths.noise_floor,
    params:
        cfg=P.fingerprint("evaluate", "sample"),
        reference=P.reference_args,
        tokenizers=P.tokenizer_args,
    threads: P.threads("noise_floor")
    resources:
        **P.resources("noise_floor"),
    log:
        paths.log("noise_floor", "{preset}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod noise-floor --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --threads {threads} --train {input.train}{params.reference}{params.tokenizers} --out {output}"
        " 2>&1 | tee {log}"


rule progress:
    """Metrics of a run's EMA snapshots: the FID/IS-vs-training curves of Fig. 6-8."""
    input:
        unpack(P.reference),
        model=rules.train.output.model,
        tokenizer=P.run_tokenizer,
    output:
        paths.progress,
    params:
        cfg=P.fingerprint("sample", "evaluate"),
        train_dir=lambda w: paths.train_dir.of(w.preset, w.variant),
        reference=P.reference_args,
    threads: P.threads("progress")
    resources:
        **P.resources("progress"),
    log:
        paths.log("progress", "{preset}-{variant}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod progress --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --variant {wildcards.variant} --threads {threads} --train-dir {params.train_dir}"
        " --tokenizer {input.tokenizer}{params.reference} --out {output} 2>&1 | tee {log}"


rule bench:
    """Throughput benchmark (not part of 'ablations'): results/bench/<preset>.json."""
    input:
        P.bench_latents,
    output:
        paths.bench,
    params:
        cfg=P.fingerprint("model", "train", "bench", "evaluate"),  # evaluate: speed_positions
    threads: P.threads("bench")
    resources:
        **P.resources("bench"),
    log:
        paths.log("bench", "{preset}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod bench --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --threads {threads} --latents {input} --out {output} 2>&1 | tee {log}"


rule speed_curve:
    """Speed vs quality of k positions per sampling step for the headline run (target 'speed')."""
    input:
        unpack(P.reference),
        unpack(P.speed_inputs),
    output:
        json=paths.report_file.partial(name="speed.json"),
        md=paths.report_file.partial(name="speed.md"),
        png=paths.report_file.partial(name="speed.png"),
    params:
        cfg=P.fingerprint("sample", "evaluate"),
        run=P.headline_run,
        baselines=lambda w, input: "".join(f" --baseline {Path(p).parent.name}={p}" for p in input.baselines),
        noise=lambda w, input: f" --noise-from {input.noise}" if "noise" in input.keys() else "",
        reference=P.reference_args,
        out_dir=lambda w: paths.report_dir.of(w.preset),
    threads: P.threads("bench")
    resources:
        **P.resources("bench"),
    log:
        paths.log("speed", "{preset}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod speed --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --variant {params.run} --threads {threads} --model {input.model} --tokenizer {input.tokenizer}"
        "{params.baselines}{params.noise}{params.reference} --out-dir {params.out_dir} 2>&1 | tee {log}"
