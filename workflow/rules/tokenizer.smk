rule train_tokenizer:
    """Train a VQ or KL tokenizer on the train split, or import a published checkpoint."""
    input:
        source=P.tokenizer_source,
    output:
        paths.tokenizer,
    params:
        cfg=P.fingerprint("data", "tokenizer"),
        source=P.tokenizer_source_arg,
    threads: P.threads("train_tokenizer")
    resources:
        **P.resources("train_tokenizer"),
    log:
        paths.log("tokenizer", "{preset}-{kind}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod train-tokenizer --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --kind {wildcards.kind} --threads {threads} {params.source} --out {output} 2>&1 | tee {log}"


rule evaluate_tokenizer:
    """Reconstruction MSE, PSNR, codebook use and rFID on held-out images."""
    input:
        unpack(lambda w: P.reference(w, real=False)),
        tokenizer=rules.train_tokenizer.output[0],
        images=paths.data.partial(split="test"),
    output:
        metrics=paths.tokenizer_metrics,
        png=paths.tokenizer_recon,
    params:
        cfg=P.fingerprint("tokenizer", "evaluate"),
        reference=P.reference_args,
    threads: P.threads("evaluate_tokenizer")
    resources:
        **P.resources("evaluate_tokenizer"),
    log:
        paths.log("evaluate_tokenizer", "{preset}-{kind}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod evaluate-tokenizer --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --threads {threads} --tokenizer {input.tokenizer} --images {input.images}{params.reference}"
        " --out {output.metrics} --png {output.png} 2>&1 | tee {log}"


rule extract_latents:
    """Encode one shard of a split (every image and its flip); resumes from its finished blocks."""
    input:
        tokenizer=rules.train_tokenizer.output[0],
        images=paths.data,
    output:
        temp(paths.latents_part),
    params:
        cfg=P.fingerprint("latents"),
    threads: P.threads("extract_latents")
    resources:
        **P.resources("extract_latents"),
    log:
        paths.log("latents", "{preset}-{kind}-{split}-{shard}-{shards}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod extract-latents --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --threads {threads} --tokenizer {input.tokenizer} --images {input.images}"
        " --shard {wildcards.shard} --shards {wildcards.shards} --out {output} 2>&1 | tee {log}"


rule merge_latents:
    """Join the shards of a split into its latent store (a file copy: small resources)."""
    input:
        P.latent_parts,
    output:
        paths.latents,
    threads: P.threads("merge")
    resources:
        **P.resources("merge"),
    log:
        paths.log("latents", "{preset}-{kind}-{split}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod merge-latents --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --parts {input} --out {output} 2>&1 | tee {log}"
