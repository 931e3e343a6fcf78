rule prepare_data:
    """A dataset split as an HDF5 image store (pixels, or an index of ImageFolder files)."""
    output:
        paths.data,
    params:
        cfg=P.fingerprint("data"),
    threads: P.threads("prepare_data")
    resources:
        **P.resources("prepare_data"),
    log:
        paths.log("prepare", "{preset}-{split}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod prepare --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --split {wildcards.split} --out {output} 2>&1 | tee {log}"


rule train_classifier:
    """The dataset classifier whose features/logits give FID, KID and IS offline: trained, or
    the fixed one of classifier.checkpoint (the same extractor on every machine)."""
    input:
        unpack(P.pinned_classifier),
        train=paths.data.partial(split="train"),
        test=paths.data.partial(split="test"),
    output:
        model=paths.classifier,
        metrics=paths.classifier_metrics,
    params:
        cfg=P.fingerprint("data", "classifier"),
    threads: P.threads("train_classifier")
    resources:
        **P.resources("train_classifier"),
    log:
        paths.log("classifier", "{preset}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod train-classifier --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --threads {threads} --train {input.train} --test {input.test} --out {output.model}"
        " --metrics {output.metrics} 2>&1 | tee {log}"
