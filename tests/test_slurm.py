"""The workflow through SLURM: a one-node cluster on this machine (scripts/slurm_cluster.sh) and
the SLURM profile (workflow/profiles/slurm), in a temporary copy of the project.

Skipped where the cluster cannot be started (not root) unless HEPTAPOD_REQUIRE_SLURM=1.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_workflow

pytestmark = pytest.mark.slurm

CLUSTER = ["bash", str(ROOT / "scripts/slurm_cluster.sh")]
# Every SLURM job runs two Snakemake processes and a torch import (~10 s here), so the test
# runs `ablations` on the smoke preset cut to one run: every rule of the target, jobs that ask
# for a GPU (train, sample, ...) and jobs that do not (prepare_data, report), and a third of
# the smoke preset's jobs.
RUN = "2d-random"


def cluster(command):
    return subprocess.run([*CLUSTER, command], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def slurm_conf():
    """A running cluster (started here, stopped at the end); its slurm.conf."""
    was_running = cluster("status").returncode == 0
    if not was_running and os.geteuid() != 0:
        reason = "starting SLURM (scripts/slurm_cluster.sh) needs root" + (
            "" if shutil.which("slurmctld") else ", and so does installing it (slurm-wlm, munge)")
        if os.environ.get("HEPTAPOD_REQUIRE_SLURM") == "1":
            pytest.fail(f"HEPTAPOD_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    start = cluster("start")
    assert start.returncode == 0, f"slurm_cluster.sh start failed:\n{start.stdout}\n{start.stderr}"
    conf = cluster("env").stdout.strip().removeprefix("export SLURM_CONF=")
    yield conf
    if not was_running:  # leave a cluster someone else started alone
        stop = cluster("stop")
        assert stop.returncode == 0, stop.stderr


def snakemake(cwd, conf, *args):
    env = {**os.environ, "HEPTAPOD_NO_PROGRESS": "1", "SLURM_CONF": conf}
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "workflow/profiles/slurm",
           # the node's CPUs; status checks every few seconds for these ~10 s jobs; job logs kept
           "--cores", str(os.cpu_count()), "--slurm-init-seconds-before-status-checks", "2",
           "--seconds-between-status-checks", "2", "--slurm-keep-successful-logs", *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    print(f"snakemake {' '.join(args)}: {time.monotonic() - start:.0f} s")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed:\n{out[-6000:]}"
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = copy_workflow(tmp_path_factory.mktemp("slurm-project"), params=False)
    # The smoke preset with one run in every family and one seed.
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    wf = params["presets"]["smoke"]["workflow"]
    wf.update({k: [RUN] for k, v in wf.items() if isinstance(v, list)}, seeds=1)
    params["presets"]["smoke"]["analysis"]["similarity_runs"] = [RUN]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def sbatch_request(job_id: str) -> str:
    """What SLURM recorded for a job (kept for MinJobAge after it ends)."""
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout


def test_ablations_through_slurm_then_cached(slurm_conf, project):
    out = snakemake(project, slurm_conf, "ablations", "--config", "preset=smoke")
    metrics = json.loads((project / "results/report/smoke/metrics.json").read_text())
    assert list(metrics["runs"]) == [RUN]
    assert all(math.isfinite(run["fid"]) for run in metrics["runs"].values())

    # Every job except the target went through sbatch, and SLURM ran it to exit code 0.
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", out))
    stats = re.search(r"total\s+(\d+)", out)
    assert stats and len(submitted) == int(stats.group(1)) - 1, out[-3000:]
    ctld_log = Path(slurm_conf).with_name("slurmctld.log").read_text()
    assert set(submitted.values()) <= set(re.findall(r"JobId=(\d+) WEXITSTATUS 0", ctld_log))

    # One SLURM log (--output) per job, named by its SLURM job id.
    logs = {p.parent.parent.name: p.stem for p in (project / ".snakemake/slurm_logs").glob("rule_*/*/*.log")}
    assert {"rule_prepare_data", "rule_train", "rule_sample", "rule_evaluate", "rule_report"} <= set(logs)
    # GPU rules asked SLURM for the (stand-in) GPU, CPU rules did not; jobs ran in the project.
    train = sbatch_request(logs["rule_train"])
    assert "TresPerJob=gres:gpu:1" in train and f"WorkDir={project.resolve()}\n" in train
    assert "gres:gpu" not in sbatch_request(logs["rule_prepare_data"])

    # everything is cached: a second run has nothing to do
    again = snakemake(project, slurm_conf, "ablations", "--config", "preset=smoke")
    assert "Nothing to be done" in again
