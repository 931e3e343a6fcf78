rule train:
    """Train one generator variant (DDP over the job's GPUs); resumes from last.pt after a kill."""
    input:
        train=P.run_latents("train"),
        val=P.run_latents("test"),
    output:
        model=paths.model,
        log=paths.train_log,
    params:
        cfg=P.fingerprint("model", "train"),
        out_dir=lambda w: paths.train_dir.of(w.preset, w.variant),
        nproc=P.train_processes,
    threads: P.threads("train")
    resources:
        **P.resources("train"),
    log:
        paths.log("train", "{preset}-{variant}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod train --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --variant {wildcards.variant} --threads {threads} --latents {input.train}"
        " --val-latents {input.val} --out-dir {params.out_dir} --nproc {params.nproc} --restart-stale"
        " --resume-parked 2>&1 | tee {log}"


rule sample:
    """One shard of a run's samples (sample.shards per run); resumes from its finished batches."""
    input:
        model=rules.train.output.model,
        tokenizer=P.run_tokenizer,
    output:
        temp(paths.sample_part),
    params:
        cfg=P.fingerprint("sample"),
    threads: P.threads("sample")
    resources:
        **P.resources("sample"),
    log:
        paths.log("sample", "{preset}-{variant}-{shard}-{shards}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod sample --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --variant {wildcards.variant} --threads {threads} --model {input.model}"
        " --tokenizer {input.tokenizer} --shard {wildcards.shard} --shards {wildcards.shards}"
        " --out {output} 2>&1 | tee {log}"


rule merge_samples:
    """A run's samples store and PNG grid, from its shards (small resources)."""
    input:
        P.sample_parts,
    output:
        samples=paths.samples,
        grid=paths.sample_grid,
    threads: P.threads("merge")
    resources:
        **P.resources("merge"),
    log:
        paths.log("sample", "{preset}-{variant}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod merge-samples --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --variant {wildcards.variant} --parts {input} --out {output.samples} --grid {output.grid}"
        " 2>&1 | tee {log}"


rule export_samples:
    """A run's samples as an ADM-style npz and one PNG each (for evaluators outside the pipeline)."""
    input:
        rules.merge_samples.output.samples,
    output:
        npz=paths.samples_npz,
        png=directory(paths.samples_png),
    threads: P.threads("merge")
    resources:
        **P.resources("merge"),
    log:
        paths.log("export", "{preset}-{variant}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod export-samples --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --samples {input} --npz {output.npz} --png-dir {output.png} 2>&1 | tee {log}"
