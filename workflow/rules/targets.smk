# The targets a user names: the whole study, one paper table or figure, speed, stability, analysis, all.


rule ablations:
    """Every family of the preset trained, sampled, evaluated and reported (the default target)."""
    default_target: True
    input:
        paths.report_file.of(PRESET, "README.md"),
        # the default preset's report is also the results folder's front page
        [paths.results_index] if PRESET == "default" else [],


# One target per paper table / figure of the preset (nothing to do where it lists no runs).
for family in FAMILIES:

    rule:
        name:
            family
        input:
            P.family_outputs(PRESET, family),


rule speed:
    """Speed vs quality of k positions per sampling step (results/report/<preset>/speed.md)."""
    input:
        paths.report_file.of(PRESET, "speed.md") if P.config(PRESET).workflow.table2 else [],


rule stability:
    """A rerun preset (workflow.rerun_of set): which of the original's verdicts hold."""
    input:
        paths.report_file.of(PRESET, "stability.md") if P.config(PRESET).workflow.rerun_of else [],


rule datasets:
    """The same study on another data set (workflow.compare_to): which verdicts hold on both."""
    input:
        paths.report_file.of(PRESET, "datasets.md") if P.config(PRESET).workflow.compare_to else [],


rule convergence:
    """The same runs trained twice as long (workflow.longer_of): have they stopped moving?"""
    input:
        paths.report_file.of(PRESET, "convergence.md") if P.config(PRESET).workflow.longer_of else [],


rule analysis:
    """Attention distance, token similarity maps and a linear probe (results/report/<preset>/analysis/)."""
    input:
        P.analysis_outputs(PRESET),


rule all:
    """Everything: the study, the speed report, the analyses and the throughput benchmark."""
    input:
        rules.ablations.input,
        rules.speed.input,
        rules.analysis.input,
        paths.bench.of(PRESET),
