rule prepare_data:
    """A dataset split as an HDF5 image store (pixels, or an index of ImageFolder files)."""
    output:
        "results/data/{preset}/{split}.h5",
    params:
        cfg=fp("data"),
    threads: threads("prepare_data")
    resources:
        **resources("prepare_data"),
    log:
        "results/logs/prepare/{preset}-{split}.log",
    shell:
        "{HEPTAPOD} prepare --preset {wildcards.preset} --split {wildcards.split} --out {output} 2>&1 | tee {log}"


rule train_classifier:
    """The dataset classifier whose features/logits give FID, KID and IS offline."""
    input:
        train="results/data/{preset}/train.h5",
        test="results/data/{preset}/test.h5",
    output:
        model="results/classifier/{preset}/classifier.pt",
        metrics="results/classifier/{preset}/metrics.json",
    params:
        cfg=fp("data", "classifier"),
    threads: threads("train_classifier")
    resources:
        **resources("train_classifier"),
    log:
        "results/logs/classifier/{preset}.log",
    shell:
        "{HEPTAPOD} train-classifier --preset {wildcards.preset} --threads {threads} --train {input.train}"
        " --test {input.test} --out {output.model} --metrics {output.metrics} 2>&1 | tee {log}"
