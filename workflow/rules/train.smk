rule train:
    """Train one generator variant (DDP over the job's GPUs); resumes from last.pt after a kill."""
    input:
        train=lambda w: paths.latents(w.preset, kind_of(w), "train"),
        val=lambda w: paths.latents(w.preset, kind_of(w), "test"),
    output:
        model="results/train/{preset}/{variant}/model.pt",
        log="results/train/{preset}/{variant}/log.jsonl",
    params:
        cfg=fp("model", "train", variant=True),
        out_dir=lambda w: paths.train_dir(w.preset, w.variant),
        nproc=resources("train").get("gpu", 1),  # several GPUs: one DDP run under torchrun
    threads: threads("train")
    resources:
        **resources("train"),
    log:
        "results/logs/train/{preset}-{variant}.log",
    shell:
        "{HEPTAPOD} train --preset {wildcards.preset} --variant {wildcards.variant} --threads {threads}"
        " --latents {input.train} --val-latents {input.val} --out-dir {params.out_dir}"
        " --nproc {params.nproc} 2>&1 | tee {log}"


rule sample:
    """One shard of a run's samples (sample.shards per run); resumes from its finished batches."""
    input:
        model="results/train/{preset}/{variant}/model.pt",
        tokenizer=lambda w: paths.tokenizer(w.preset, kind_of(w)),
    output:
        temp("results/sample/{preset}/{variant}/part-{shard}-of-{shards}.h5"),
    params:
        cfg=fp("sample", variant=True),
    threads: threads("sample")
    resources:
        **resources("sample"),
    log:
        "results/logs/sample/{preset}-{variant}-{shard}-of-{shards}.log",
    shell:
        "{HEPTAPOD} sample --preset {wildcards.preset} --variant {wildcards.variant} --threads {threads}"
        " --model {input.model} --tokenizer {input.tokenizer} --shard {wildcards.shard}"
        " --shards {wildcards.shards} --out {output} 2>&1 | tee {log}"


rule merge_samples:
    """A run's samples store and PNG grid, from its shards."""
    input:
        lambda w: [paths.sample_part(w.preset, w.variant, i, k)
                   for k in [cfg_of(w).sample.shards] for i in range(k)],
    output:
        samples="results/sample/{preset}/{variant}/samples.h5",
        grid="results/sample/{preset}/{variant}/grid.png",
    threads: 1
    resources:
        **resources("report"),
    log:
        "results/logs/sample/{preset}-{variant}-merge.log",
    shell:
        "{HEPTAPOD} merge-samples --preset {wildcards.preset} --variant {wildcards.variant}"
        " --parts {input} --out {output.samples} --grid {output.grid} 2>&1 | tee {log}"


rule export_samples:
    """A run's samples as an ADM-style npz and one PNG each (for evaluators outside the pipeline)."""
    input:
        "results/sample/{preset}/{variant}/samples.h5",
    output:
        npz="results/sample/{preset}/{variant}/samples.npz",
        png=directory("results/sample/{preset}/{variant}/png"),
    threads: 1
    resources:
        **resources("report"),
    log:
        "results/logs/sample/{preset}-{variant}-export.log",
    shell:
        "{HEPTAPOD} export-samples --preset {wildcards.preset} --samples {input} --npz {output.npz}"
        " --png-dir {output.png} 2>&1 | tee {log}"
