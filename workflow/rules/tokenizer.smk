def tokenizer_source(w):
    """A published checkpoint to import (tokenizer.vq_checkpoint / kl_checkpoint), else the train split."""
    return published_checkpoint(resolve(config, w.preset), w.kind) or paths.data(w.preset, "train")


rule train_tokenizer:
    """Train a VQ or KL tokenizer on the train split, or import a published checkpoint."""
    input:
        tokenizer_source,
    output:
        "results/tokenizer/{preset}/{kind}/tokenizer.pt",
    params:
        cfg=fp("data", "tokenizer"),
        source=lambda w, input: ("--published " if published_checkpoint(resolve(config, w.preset), w.kind)
                                 else "--images ") + str(input[0]),
    threads: threads("train_tokenizer")
    resources:
        **resources("train_tokenizer"),
    log:
        "results/logs/tokenizer/{preset}-{kind}.log",
    shell:
        "{HEPTAPOD} train-tokenizer --preset {wildcards.preset} --kind {wildcards.kind} --threads {threads}"
        " {params.source} --out {output} 2>&1 | tee {log}"


rule evaluate_tokenizer:
    """Reconstruction MSE, PSNR, codebook use and rFID on held-out images."""
    input:
        unpack(lambda w: reference(w, real=False)),
        tokenizer="results/tokenizer/{preset}/{kind}/tokenizer.pt",
        images="results/data/{preset}/test.h5",
    output:
        metrics="results/tokenizer/{preset}/{kind}/metrics.json",
        png="results/tokenizer/{preset}/{kind}/recon.png",
    params:
        cfg=fp("tokenizer", "evaluate"),
        reference=reference_args,
    threads: threads("evaluate_tokenizer")
    resources:
        **resources("evaluate_tokenizer"),
    log:
        "results/logs/evaluate_tokenizer/{preset}-{kind}.log",
    shell:
        "{HEPTAPOD} evaluate-tokenizer --preset {wildcards.preset} --threads {threads}"
        " --tokenizer {input.tokenizer} --images {input.images}{params.reference}"
        " --out {output.metrics} --png {output.png} 2>&1 | tee {log}"


rule extract_latents:
    """Encode one shard of a split (every image and its flip); resumes from its finished blocks."""
    input:
        tokenizer="results/tokenizer/{preset}/{kind}/tokenizer.pt",
        images="results/data/{preset}/{split}.h5",
    output:
        temp("results/latents/{preset}/{kind}/{split}.part-{shard}-of-{shards}.h5"),
    params:
        cfg=fp("latents"),
    threads: threads("extract_latents")
    resources:
        **resources("extract_latents"),
    log:
        "results/logs/latents/{preset}-{kind}-{split}-{shard}-of-{shards}.log",
    shell:
        "{HEPTAPOD} extract-latents --preset {wildcards.preset} --threads {threads}"
        " --tokenizer {input.tokenizer} --images {input.images} --shard {wildcards.shard}"
        " --shards {wildcards.shards} --out {output} 2>&1 | tee {log}"


rule merge_latents:
    """Join the shards of a split into its latent store."""
    input:
        lambda w: [paths.latents_part(w.preset, w.kind, w.split, i, k)
                   for k in [resolve(config, w.preset).latents.shards] for i in range(k)],
    output:
        "results/latents/{preset}/{kind}/{split}.h5",
    threads: 1
    resources:
        **resources("extract_latents"),
    log:
        "results/logs/latents/{preset}-{kind}-{split}-merge.log",
    shell:
        "{HEPTAPOD} merge-latents --preset {wildcards.preset} --parts {input} --out {output} 2>&1 | tee {log}"
