"""dvc.yaml drives the workflow and owns only the published tables, never Snakemake's outputs."""
import re
import subprocess
import sys

import yaml

from conftest import ROOT


def dvc_outputs() -> list[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = []
    for stage in stages.values():
        body = stage.get("do", stage)
        for key in ("outs", "metrics", "plots"):
            outs += [next(iter(o)) if isinstance(o, dict) else o for o in body.get(key, [])]
    return outs


def test_dvc_and_snakemake_never_claim_the_same_outputs():
    snakemake_outputs = []
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        snakemake_outputs += re.findall(r'"(results/[^"]+)"', smk.read_text())
    assert snakemake_outputs
    assert not any(o.startswith("results/dvc") for o in snakemake_outputs)
    outs = dvc_outputs()
    assert outs and all(o.startswith("results/dvc/") for o in outs)


def test_dvc_reads_the_pipeline():
    proc = subprocess.run([sys.executable, "-m", "dvc", "stage", "list"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ablations@default" in proc.stdout
