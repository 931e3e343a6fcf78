rule report_family:
    """Table, plot and paper comparison of one family: results/report/<preset>/<family>.*"""
    input:
        unpack(P.family_inputs),
    output:
        md=paths.family_report.partial(ext="md"),
        csv=paths.family_report.partial(ext="csv"),
        json=paths.family_report.partial(ext="json"),
        png=report(paths.family_report.partial(ext="png"), caption="../report/family.rst",
                   category="Paper tables and figures", labels={"preset": "{preset}", "figure": "{family}"}),
    wildcard_constraints:
        family="|".join(FAMILIES),
    params:
        cfg=P.fingerprint("workflow", "data"),
        runs=lambda w: P.family_runs(w)["runs"],
        noise_runs=lambda w: P.family_runs(w)["noise_runs"],
        out_dir=lambda w: paths.report_dir.of(w.preset),
    threads: P.threads("report")
    resources:
        **P.resources("report"),
    log:
        paths.log("report", "{preset}-{family}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod report-family --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --family {wildcards.family} --runs {params.runs} --noise-runs {params.noise_runs}"
        " --metrics {input.metrics} --likelihood {input.likelihood} --models {input.models}"
        " --logs {input.logs} --progress {input.progress} --floor {input.floor}"
        " --out-dir {params.out_dir} 2>&1 | tee {log}"


rule report:
    """The preset's README: every family, tokenizers, training curves and samples."""
    input:
        unpack(P.report_inputs),
    output:
        readme=paths.report_file.partial(name="README.md"),
        csv=paths.report_file.partial(name="runs.csv"),
        json=paths.report_file.partial(name="metrics.json"),
        curves=report(paths.report_file.partial(name="training_curves.png"), caption="../report/training.rst",
                      category="Runs", labels={"preset": "{preset}", "figure": "training curves"}),
        samples=report(paths.report_file.partial(name="samples.png"), caption="../report/samples.rst",
                       category="Runs", labels={"preset": "{preset}", "figure": "samples"}),
    params:
        cfg=P.fingerprint("workflow", "data"),
        runs=P.report_runs,
        classifier=lambda w, input: f"--classifier-metrics {input.classifier}" if input.classifier else "",
        out_dir=lambda w: paths.report_dir.of(w.preset),
    threads: P.threads("report")
    resources:
        **P.resources("report"),
    log:
        paths.log("report", "{preset}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod report --params $HEPTAPOD_PARAMS --preset {wildcards.preset} --runs {params.runs}"
        " --metrics {input.metrics} --likelihood {input.likelihood} --models {input.models} --logs {input.logs}"
        " --grids {input.grids} --families {input.families} --floor {input.floor}"
        " --tokenizers {input.tokenizers} --recons {input.recons} {params.classifier}"
        " --out-dir {params.out_dir} 2>&1 | tee {log}"


rule index:
    """The results folder's README: the default preset's report, readable from there."""
    input:
        paths.report_file.of("default", "README.md"),
    output:
        paths.results_index,
    threads: P.threads("report")
    resources:
        **P.resources("report"),
    log:
        paths.log("report", "index"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod index --params $HEPTAPOD_PARAMS --report {input} --out {output} 2>&1 | tee {log}"


rule agreement_report:
    """Which verdicts of another preset hold in this one: its rerun (stability: workflow.rerun_of)
    or the same study on another data set (datasets: workflow.compare_to)."""
    input:
        unpack(P.agreement_inputs),
    output:
        md=paths.report_file.partial(name="{name}.md"),
        json=paths.report_file.partial(name="{name}.json"),
    wildcard_constraints:
        name="stability|datasets",
    params:
        first=lambda w: paths.report_dir.of(P.compared_preset(w)),
        second=lambda w: paths.report_dir.of(w.preset),
        kind=lambda w: "rerun" if w.name == "stability" else "dataset",
        extractor=P.extractor_args,
    threads: P.threads("report")
    resources:
        **P.resources("report"),
    log:
        paths.log("report", "{preset}-{name}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod stability --params $HEPTAPOD_PARAMS --preset {wildcards.preset} --kind {params.kind}"
        " --first {params.first} --second {params.second}{params.extractor} --out {output.md} 2>&1 | tee {log}"


rule convergence_report:
    """How far each run moved when its training doubled (workflow.longer_of: the same runs on a
    shorter schedule), and whether Table 1's verdicts hold at both budgets; judged by the noise of
    the chain's first preset, or of a longer budget's seeds (this link's or an earlier one's) where larger."""
    input:
        unpack(P.convergence_inputs),
    output:
        md=paths.report_file.partial(name="convergence.md"),
        json=paths.report_file.partial(name="convergence.json"),
        png=paths.report_file.partial(name="convergence.png"),
    params:
        cfg=P.fingerprint("workflow", "data"),
        runs=lambda w: P.convergence_runs(w)["runs"],
        first_runs=lambda w: P.convergence_runs(w)["first_runs"],
        density_runs=lambda w: P.convergence_runs(w)["density_runs"],
    threads: P.threads("report")
    resources:
        **P.resources("report"),
    log:
        paths.log("report", "{preset}-convergence"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod convergence --params $HEPTAPOD_PARAMS --preset {wildcards.preset}"
        " --runs {params.runs} --metrics {input.metrics} --likelihood {input.likelihood}"
        " --models {input.models} --logs {input.logs} --latents {input.latents}"
        " --shorter-metrics {input.shorter_metrics}"
        " --shorter-likelihood {input.shorter_likelihood} --shorter-models {input.shorter_models}"
        " --shorter-logs {input.shorter_logs} --shorter-latents {input.shorter_latents}"
        " --first-runs {params.first_runs} --first-metrics {input.first_metrics}"
        " --first-likelihood {input.first_likelihood} --first-models {input.first_models}"
        " --first-logs {input.first_logs} --first-floor {input.first_floor} --steps {input.steps}"
        " --density-runs {params.density_runs} --first-latents {input.first_latents}"
        " --earlier-link {input.earlier_link}"
        " --out {output.md} 2>&1 | tee {log}"
