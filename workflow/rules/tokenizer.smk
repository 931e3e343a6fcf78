rule train_tokenizer:
    input:
        "results/data/{preset}/train.h5",
    output:
        "results/tokenizer/{preset}/{kind}/tokenizer.pt",
    params:
        cfg=fp("data", "tokenizer"),
    wildcard_constraints:
        kind="vq|kl",
    threads: max(1, workflow.cores - 1)
    log:
        "results/logs/tokenizer/{preset}-{kind}.log",
    shell:
        "{HEPTAPOD} train-tokenizer --preset {wildcards.preset} --kind {wildcards.kind} --threads {threads}"
        " --images {input} --out {output} 2>&1 | tee {log}"


rule evaluate_tokenizer:
    input:
        tokenizer="results/tokenizer/{preset}/{kind}/tokenizer.pt",
        images="results/data/{preset}/test.h5",
        classifier="results/classifier/{preset}/classifier.pt",
    output:
        metrics="results/tokenizer/{preset}/{kind}/metrics.json",
        png="results/tokenizer/{preset}/{kind}/recon.png",
    params:
        cfg=fp("tokenizer", "evaluate"),
    threads: min(workflow.cores, CFG.workflow.threads)
    log:
        "results/logs/evaluate_tokenizer/{preset}-{kind}.log",
    shell:
        "{HEPTAPOD} evaluate-tokenizer --preset {wildcards.preset} --threads {threads}"
        " --tokenizer {input.tokenizer} --images {input.images} --classifier {input.classifier}"
        " --out {output.metrics} --png {output.png} 2>&1 | tee {log}"


rule extract_latents:
    input:
        tokenizer="results/tokenizer/{preset}/{kind}/tokenizer.pt",
        images="results/data/{preset}/{split}.h5",
    output:
        "results/latents/{preset}/{kind}/{split}.h5",
    params:
        cfg=fp("latents"),
    threads: min(workflow.cores, CFG.workflow.threads)
    log:
        "results/logs/latents/{preset}-{kind}-{split}.log",
    shell:
        "{HEPTAPOD} extract-latents --preset {wildcards.preset} --threads {threads}"
        " --tokenizer {input.tokenizer} --images {input.images} --out {output} 2>&1 | tee {log}"
