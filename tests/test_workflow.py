"""The Snakemake workflow on the smoke preset, end to end, in a temporary copy of the project."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.workflow


def snakemake(cwd, *args, check=True):
    env = {**os.environ, "HEPTAPOD_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args],
                          cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "workflow", root / "workflow")
    (root / "profiles").symlink_to("workflow/profiles")
    return root


def test_dry_run_lists_every_stage(project):
    out = snakemake(project, "-n", "all", "--config", "preset=smoke").stdout
    for rule in ("prepare_data", "train_classifier", "train_tokenizer", "evaluate_tokenizer",
                 "extract_latents", "train", "sample", "evaluate", "report", "bench"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, rule


def test_smoke_ablations_end_to_end_then_cached(project):
    snakemake(project, "ablations", "--config", "preset=smoke")
    report = project / "results/report/smoke"
    metrics = json.loads((report / "metrics.json").read_text())
    gen = metrics["generators"]["2d-random"]
    assert all(math.isfinite(gen[k]) for k in ("fid", "is", "kid"))
    assert metrics["provenance"]["feature_extractor"] == "dataset classifier"
    assert (report / "training_curve.png").stat().st_size > 1000
    assert (report / "samples_2d-random.png").stat().st_size > 100
    text = (report / "README.md").read_text()
    assert "FID (dataset classifier)" in text and "paper FID" in text
    # everything is cached: a second run has nothing to do
    again = snakemake(project, "ablations", "--config", "preset=smoke")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_changed_sampling_params_rerun_only_downstream(project):
    params = (project / "params.yaml").read_text()
    changed = params.replace("sample: {num_samples: 20, batch_size: 10, grid_rows: 2}",
                             "sample: {num_samples: 20, batch_size: 10, grid_rows: 2, temperature: 0.9}")
    assert changed != params
    (project / "params.yaml").write_text(changed)
    try:
        out = snakemake(project, "-n", "ablations", "--config", "preset=smoke").stdout
    finally:
        (project / "params.yaml").write_text(params)
    assert "rule sample:" in out and "rule evaluate:" in out
    assert "rule train:" not in out and "rule train_tokenizer:" not in out


def test_bench_writes_the_three_ratios(project):
    snakemake(project, "all", "--config", "preset=smoke")
    bench = json.loads((project / "results/bench/smoke.json").read_text())
    assert bench["train"]["head_step_ratio"] > 0
    assert 0 < bench["sample"]["backbone_share_kv_cache"] < 1
    assert bench["loader"]["loader_to_train_ratio"] > 0
