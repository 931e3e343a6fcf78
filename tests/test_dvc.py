"""dvc.yaml drives the workflow and owns only the published tables, never Snakemake's outputs."""
import re
import subprocess
import sys

import yaml

from conftest import ROOT


PIPELINES = [ROOT / "dvc.yaml", ROOT / "workflow/paper/dvc.yaml"]


def dvc_outputs() -> list[str]:
    """Every output path declared in the project's DVC pipelines (relative to the repository root:
    the paper pipeline runs with wdir at the root)."""
    outs = []
    for pipeline in PIPELINES:
        for stage in yaml.safe_load(pipeline.read_text())["stages"].values():
            body = stage.get("do", stage)
            for key in ("outs", "metrics", "plots"):
                outs += [next(iter(o)) if isinstance(o, dict) else o for o in body.get(key, [])]
    return outs


def test_dvc_and_snakemake_never_claim_the_same_outputs():
    from heptapod import paths

    # the rules take every path from heptapod.paths: none is written in a rule file
    for smk in [ROOT / "Snakefile", *(ROOT / "workflow/rules").glob("*.smk")]:
        assert not re.findall(r'"results/', smk.read_text()), smk
    snakemake_outputs = [v for v in vars(paths).values() if isinstance(v, paths.Pattern)]
    assert len(snakemake_outputs) > 20
    assert not any(o.startswith("results/dvc") for o in snakemake_outputs)
    outs = dvc_outputs()
    assert outs and all(o.startswith("results/dvc/") for o in outs)


def test_dvc_reads_the_pipelines():
    """One stage per paper table/figure: the embedded default by default, ImageNet on request."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "stage", "list"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    from heptapod.config import FAMILIES

    for family in FAMILIES:
        assert f"paper@{family}-default" in proc.stdout
    # the README stage runs after every family's stage: its deps name each family once
    report = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["do"]
    assert [d for d in report["deps"] if d.startswith("results/dvc/")] == [
        f"results/dvc/${{item}}/{family}.json" for family in FAMILIES]
    # every stage is told its preset on the command line: params.yaml's own `preset` is not read
    for pipeline in PIPELINES:
        for stage in yaml.safe_load(pipeline.read_text())["stages"].values():
            assert "preset" not in stage.get("do", stage)["params"], pipeline
    assert "report@default" in proc.stdout and "imagenet" not in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "workflow/paper/dvc.yaml"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for stage in ("table1-imagenet-l", "table2-imagenet-b", "table2-imagenet-l", "table2-imagenet-h",
                  "table4-imagenet-l", "fig6-imagenet-l", "fig7-imagenet-b", "fig8-imagenet-b"):
        assert f"paper@{stage}" in proc.stdout
    # every paper stage names a family its preset really lists runs for
    from heptapod.config import load_params, resolve

    params = load_params(ROOT / "params.yaml")
    for item in yaml.safe_load((ROOT / "workflow/paper/dvc.yaml").read_text())["stages"]["paper"]["foreach"].values():
        assert resolve(params, item["preset"]).workflow.family_runs(item["family"]), item
