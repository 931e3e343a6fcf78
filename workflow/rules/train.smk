rule train:
    """Train one generator variant; resumes from last.pt in its folder after a kill."""
    input:
        lambda w: paths.latents(w.preset, kind_of(w), "train"),
    output:
        model="results/train/{preset}/{variant}/model.pt",
        log="results/train/{preset}/{variant}/log.jsonl",
    params:
        cfg=fp("model", "train", variant=True),
        out_dir=lambda w: paths.train_dir(w.preset, w.variant),
    threads: min(workflow.cores, CFG.workflow.threads)
    resources:
        gpu=GPU_JOB,
    log:
        "results/logs/train/{preset}-{variant}.log",
    shell:
        "{HEPTAPOD} train --preset {wildcards.preset} --variant {wildcards.variant} --threads {threads}"
        " --latents {input} --out-dir {params.out_dir} 2>&1 | tee {log}"


rule sample:
    input:
        model="results/train/{preset}/{variant}/model.pt",
        tokenizer=lambda w: paths.tokenizer(w.preset, kind_of(w)),
    output:
        samples="results/sample/{preset}/{variant}/samples.h5",
        grid="results/sample/{preset}/{variant}/grid.png",
    params:
        cfg=fp("sample", variant=True),
    threads: min(workflow.cores, CFG.workflow.threads)
    resources:
        gpu=GPU_JOB,
    log:
        "results/logs/sample/{preset}-{variant}.log",
    shell:
        "{HEPTAPOD} sample --preset {wildcards.preset} --variant {wildcards.variant} --threads {threads}"
        " --model {input.model} --tokenizer {input.tokenizer} --out {output.samples}"
        " --grid {output.grid} 2>&1 | tee {log}"
