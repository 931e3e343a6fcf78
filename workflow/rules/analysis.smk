# Beyond the paper: what the objectives do inside the model, on the runs the ablations trained.


rule analysis_job:
    """Attention distance / token similarity maps / linear probe / NLL by generation step: results/report/<preset>/analysis/<name>.*"""
    input:
        unpack(P.analysis_inputs),
    output:
        md=paths.analysis.partial(ext="md"),
        json=paths.analysis.partial(ext="json"),
        png=report(paths.analysis.partial(ext="png"), caption="../report/analysis.rst",
                   category="Inside the model", labels={"preset": "{preset}", "figure": "{name}"}),
    wildcard_constraints:
        name="|".join(Pipeline.ANALYSES),
    params:
        cfg=P.fingerprint("analysis", "sample", "evaluate", "data"),  # evaluate: the NLL orders and batch
        runs=P.analysis_runs,
        train=lambda w, input: f"--train-latents {input.train}" if w.name == "probe" else "",
        images=lambda w, input: f"--images {input.images}" if w.name == "similarity" else "",
        likelihood=lambda w, input: f"--likelihood {input.likelihood}" if w.name == "steps" else "",
        out_dir=lambda w: paths.analysis_dir.of(w.preset),
    threads: P.threads("analysis")
    resources:
        **P.resources("analysis"),
    log:
        paths.log("analysis", "{preset}-{name}"),
    conda:
        "../../environment.yml"
    shell:
        "python -m heptapod analyze --params $HEPTAPOD_PARAMS --preset {wildcards.preset} --threads {threads}"
        " --name {wildcards.name} --runs {params.runs} --models {input.models} --latents {input.latents}"
        " {params.train} {params.images} {params.likelihood} --out-dir {params.out_dir} 2>&1 | tee {log}"
