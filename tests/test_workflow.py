"""The Snakemake workflow on the smoke preset, end to end, in a temporary copy of the project."""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, copy_workflow

from heptapod.config import load_params, resolve
from heptapod.utils.device import machine, machine_label
from heptapod.workflow import Pipeline

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
    return copy_workflow(tmp_path_factory.mktemp("project"))


@pytest.fixture
def scored(project):
    """The project with the smoke preset's ablations built and scored: cached when the end-to-end
    test ran first, built here when a test that reads them runs on its own."""
    snakemake(project, "ablations", "--config", "preset=smoke")
    return project


def test_dry_run_lists_every_stage(project):
    out = snakemake(project, "-n", "all", "--config", "preset=smoke").stdout
    for rule in ("prepare_data", "train_classifier", "train_tokenizer", "evaluate_tokenizer",
                 "extract_latents", "train", "sample", "evaluate", "progress", "report", "bench"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, rule
    # every run of every family is in the DAG
    runs = resolve(load_params(project / "params.yaml"), "smoke").workflow.runs()
    assert len(runs) >= 6
    for run in runs:
        assert f"results/train/smoke/{run}/model.pt" in out, run


def test_every_preset_plans_all(project, tmp_path):
    """`snakemake -n all` plans every preset; the files a paper-scale preset imports (released
    tokenizers, Inception weights, reference statistics) are stood in for by empty files, named
    through a --configfile."""
    from heptapod.config import preset_names

    params = load_params(project / "params.yaml")
    external = {"tokenizer": ("vq_checkpoint", "kl_checkpoint"), "evaluate": ("inception_weights", "reference_stats")}
    overrides = {}
    for preset in preset_names(params):
        cfg = resolve(params, preset)
        for section, keys in external.items():
            for key in keys:
                if getattr(getattr(cfg, section), key):
                    stub = tmp_path / f"{preset}-{key}"
                    stub.touch()
                    overrides.setdefault(preset, {}).setdefault(section, {})[key] = str(stub)
    assert overrides, "no preset imports a file: the stand-ins test nothing"
    configfile = tmp_path / "external.yaml"
    configfile.write_text(json.dumps({"presets": overrides}))  # JSON is YAML
    for preset in preset_names(params):
        snakemake(project, "-n", "all", "--configfile", str(configfile), "--config", f"preset={preset}")


def test_one_paper_table_is_its_own_target(project):
    """Before anything is built: a table's target needs its own runs, plus Table 1's seed
    replicates where it has none of its own (they measure the seed noise its verdict uses)."""
    out = snakemake(project, "-n", "table4", "--config", "preset=smoke").stdout
    assert "results/report/smoke/table4.md" in out and "results/train/smoke/depth-2-1/model.pt" in out
    assert "results/train/smoke/1d-raster@1/model.pt" in out  # seed noise
    assert "results/train/smoke/w4-n16/model.pt" not in out and "README.md" not in out
    assert "results/evaluate/smoke/noise_floor.json" in out


def test_smoke_ablations_end_to_end_then_cached(project):
    snakemake(project, "ablations", "--config", "preset=smoke")
    report = project / "results/report/smoke"
    metrics = json.loads((report / "metrics.json").read_text())
    for run in ("2d-random", "2d-random@1", "1d-raster", "w4-n16", "n2", "depth-2-1", "2d-random-kl"):
        assert all(math.isfinite(metrics["runs"][run][k])
                   for k in ("fid", "is", "kid", "precision", "recall", "train_PFLOP"))
        score = "dloss" if run.endswith("-kl") else "nll"  # held-out NLL, or DiffLoss's own loss
        assert metrics["runs"][run][score] > 0, run
        log = [json.loads(line) for line in (project / f"results/train/smoke/{run}/log.jsonl").open()]
        assert sum(("val_nll_bits" in r) or ("val_diffusion_loss" in r) for r in log) == 3  # 2 snapshots + end
    assert metrics["provenance"]["feature_extractor"] == "dataset classifier"
    families = ("table1", "table2", "table4", "fig6", "fig7", "fig8")
    for png in ("training_curves.png", "samples.png", "tokenizer_recon_vq.png", "tokenizer_recon_kl.png",
                *(f"{f}.png" for f in families)):
        assert (report / png).stat().st_size > 1000, png
    text = (report / "README.md").read_text()
    assert "FID (dataset classifier)" in text and "paper FID" in text
    here = machine_label(machine(torch.device("cpu"))).rsplit(",", 1)[0]  # jobs choose their own threads
    assert f"| machine | runs trained on {here}, " in text
    for heading in ("Table 1 analogue", "Table 2 analogue", "Table 4 analogue", "Fig. 6 analogue",
                    "Fig. 7 analogue", "Fig. 8 analogue", "What agrees with the paper"):
        assert heading in text
    for family in families:  # each family's statement is in the README's summary
        fam = json.loads((report / f"{family}.json").read_text())
        assert fam["statement"] in text
        assert set(fam["verdict"].values()) <= {"agrees", "disagrees", "within noise"}
        if family != "table2":
            assert fam["verdict"] and fam["noise"]["fid"]["floor_sd"] > 0 and fam["noise"]["fid"]["seed_sd"] > 0
    assert "Noise and the decision rule" in text and "NLL (bits/token, test)" in text and "Precision / recall" in text
    # the tokenizer ceiling: real images through each tokenizer the runs read score worse than the real ones
    floor = json.loads((project / "results/evaluate/smoke/noise_floor.json").read_text())
    assert set(floor["tokenized"]) == {"vq", "kl"} and "through the kl tokenizer" in text
    assert all(t["fid"] > floor["by_count"]["20"]["fid"] for t in floor["tokenized"].values())
    page = json.loads((report / "table1.json").read_text())
    points = page["reference_points"]  # beside every family's runs
    # each page names the commit that scored each of its runs and where it was trained
    runs = page["runs"]
    table1_runs = resolve(load_params(project / "params.yaml"), "smoke").workflow.family_runs("table1")
    assert set(runs) == set(table1_runs) and "2d-random@1" in runs
    assert all(set(r) == {"commit", "machine"} and r["machine"] != "unknown" for r in runs.values())
    assert points["through the vq tokenizer (ceiling)"]["fid"] == floor["tokenized"]["vq"]["fid"]
    assert "Reference points at 20 samples: real images (floor): FID " in (report / "table1.md").read_text()
    table1 = (report / "table1.csv").read_text()
    assert "± " in table1  # two seeds: mean ± SD
    # samples were drawn in 2 shards and merged; the headline run is exported for outside evaluators
    run = project / "results/sample/smoke/2d-random"
    assert not list(run.glob("part-*")) and (run / "samples.npz").is_file()
    assert len(list((run / "png").glob("*.png"))) == 20
    # everything is cached: a second run has nothing to do
    again = snakemake(project, "ablations", "--config", "preset=smoke")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.usefixtures("scored")
def test_recorded_runs_stand_in_for_training_in_a_fresh_clone(project, tmp_path):
    """`heptapod record` keeps what a page reads of each scored run; a fresh clone with
    workflow.records on builds the page from the records without training a run, to the same
    numbers and provenance, and trains a run again once its parameters differ from its record's."""
    cfg = resolve(load_params(project / "params.yaml"), "smoke")
    runs = cfg.workflow.family_runs("table4") + cfg.workflow.noise_runs("table4")
    by_step = [r for f in Pipeline.STEPS_FAMILIES for r in cfg.workflow.family_runs(f)]  # the NLL-by-step runs
    runs += [r for r in dict.fromkeys(by_step) if r not in runs]
    subprocess.run([sys.executable, "-m", "heptapod", "record", "--params", "params.yaml", "--preset", "smoke",
                    "--runs", *runs], cwd=project, check=True, capture_output=True)
    record = project / "results/records/smoke/depth-2-1"
    assert {p.name for p in record.iterdir()} == {"metrics.json", "likelihood.json", "model.json", "log.jsonl",
                                                   "grid.png", "record.json"}
    clone = copy_workflow(tmp_path)
    shutil.copytree(project / "results/records", clone / "results/records")
    records_on = {"presets": {"smoke": {"workflow": {"records": True}}}}
    (tmp_path / "on.yaml").write_text(json.dumps(records_on))
    on = ["--configfile", "on.yaml", "--config", "preset=smoke"]
    plan = snakemake(clone, "-n", "table4", *on).stdout
    assert "rule train:" not in plan and "rule sample:" not in plan and "results/records/smoke/depth-2-1" in plan
    snakemake(clone, "table4", *on)
    built, original = (json.loads((p / "results/report/smoke/table4.json").read_text()) for p in (clone, project))
    assert built["variants"] == original["variants"] and built["verdict"] == original["verdict"]
    assert built["runs"] == original["runs"]  # each run named with the commit and machine that made it
    # the NLL by generation step reads only scores and model summaries: the records serve for it
    steps = "results/report/smoke/analysis/steps.json"
    plan = snakemake(clone, "-n", steps, *on).stdout
    assert "rule train:" not in plan and "rule likelihood:" not in plan and "rule analysis_job:" in plan
    snakemake(clone, steps, *on)
    nll = json.loads((clone / steps).read_text())["nll"]
    assert set(nll) == set(by_step)
    for run, value in nll.items():
        recorded = json.loads((clone / f"results/records/smoke/{run}/likelihood.json").read_text())
        assert value == pytest.approx(recorded["nll_bits_per_token"], rel=1e-9)
    # another sampling temperature: the records no longer describe these runs, which train again
    records_on["presets"]["smoke"]["sample"] = {"temperature": 0.9}
    (tmp_path / "on.yaml").write_text(json.dumps(records_on))
    assert "results/train/smoke/depth-2-1/model.pt" in snakemake(clone, "-n", "table4", *on).stdout


@pytest.mark.usefixtures("scored")
def test_doubled_runs_say_whether_they_stopped_moving(project, tmp_path):
    """A preset that trains another's Table 1 runs twice as long (workflow.longer_of): the
    'convergence' target sets each run beside its namesake, paired over the same held-out tokens,
    and says whether Table 1's verdicts hold at both budgets. The 2x trains two seeds: their
    spread is set beside the first budget's, and the larger judges. A chain (4x of the 2x, one
    seed) compares with the 2x runs, shows the first budget too, and keeps the 2x link's noise."""
    import copy

    smoke = load_params(project / "params.yaml")["presets"]["smoke"]
    longer = copy.deepcopy(smoke)
    longer["train"]["steps"] = 2 * smoke["train"]["steps"]
    longer["workflow"].update(table1=["1d-raster", "2d-random"], table2=[], window_sweep=[], density_sweep=[],
                              depth_split=[], token_types=[], seeds=2, longer_of="smoke")
    longer["analysis"]["similarity_runs"] = ["2d-random"]  # of the runs it trains
    longest = copy.deepcopy(longer)
    longest["train"]["steps"] = 4 * smoke["train"]["steps"]
    longest["workflow"].update(table1=["2d-random"], seeds=1, longer_of="smoke-2x")
    configfile = tmp_path / "smoke-2x.yaml"
    configfile.write_text(json.dumps({"presets": {"smoke-2x": longer, "smoke-4x": longest}}))  # JSON is YAML
    snakemake(project, "convergence", "--configfile", str(configfile), "--config", "preset=smoke-2x")
    out = project / "results/report/smoke-2x"
    result = json.loads((out / "convergence.json").read_text())
    assert result["shorter"] == "smoke" and result["paired"]  # same tokenizer, same held-out tokens
    assert set(result["runs"]) == {"1d-raster", "1d-raster@1", "2d-random", "2d-random@1"}
    spread = {row["preset"]: row for row in result["seed_spread"]}
    assert set(spread) == {"smoke", "smoke-2x"} and spread["smoke-2x"]["seeds per variant"] == "2"
    for metric, label in (("nll", "held-out NLL (bits/token)"), ("fid", "FID")):
        sds = [spread[p][f"{label} seed SD"] for p in ("smoke", "smoke-2x")]
        assert result["noise"][metric]["seed_sd"] == pytest.approx(max(sds))
    for run, scores in result["runs"].items():
        assert set(scores) == {"nll", "fid"}
        assert scores["nll"]["moved"] in ("improved", "got worse", "stopped moving")
        short = json.loads((project / f"results/evaluate/smoke/{run}/likelihood.json").read_text())
        long = json.loads((project / f"results/evaluate/smoke-2x/{run}/likelihood.json").read_text())
        assert scores["nll"]["before"] == short["nll_bits_per_token"] and scores["nll"]["after"] == long["nll_bits_per_token"]
    assert set(result["verdicts"]) == {"fid", "nll"}
    text = (out / "convergence.md").read_text()
    assert "smoke (6 steps)" in text and "smoke-2x (12 steps)" in text and "paired image by image" in text
    assert "## Seed spread at each budget" in text and "mean over 2 seeds" in text
    assert (out / "convergence.png").stat().st_size > 1000
    # where in the generation each budget's runs stand: both presets' NLL by step, side by side
    assert "## Held-out NLL by generation step at each budget" in text
    by_step = [json.loads((project / f"results/report/{p}/analysis/steps.json").read_text()) for p in ("smoke", "smoke-2x")]
    row = result["by_step"]["quarters"][-1]
    for steps, label in zip(by_step, ("smoke (6 steps)", "smoke-2x (12 steps)")):
        seeds = [q[-1] for run, q in steps["quarters"].items() if run.split("@")[0] == "2d-random"]
        assert row[f"2d-random, {label}"] == pytest.approx(sum(seeds) / len(seeds))
    # the first budget's denser supervision (smoke's n2) beside the chained runs, by training compute
    assert "## Denser supervision or longer training, at equal compute" in text
    judged = result["by_compute"]["judged"]
    assert {j["dense"] for j in judged} == {"n2, 6 steps"}
    assert {j["versus"].split(",")[0] for j in judged} == {"1d-raster", "2d-random"}
    assert all(j["nll"] in ("agrees", "disagrees", "within noise") for j in judged)
    assert "paired SE over images" in text.split("at equal compute")[1]

    snakemake(project, "convergence", "--configfile", str(configfile), "--config", "preset=smoke-4x")
    chained = json.loads((project / "results/report/smoke-4x/convergence.json").read_text())
    assert (chained["shorter"], chained["longer"], chained["noise_from"]) == ("smoke-2x", "smoke-4x", "smoke")
    # one seed at 4x: the link keeps the noise of the link before (the first preset's seeds and
    # floor, or the 2x seeds' where they spread more), so its threshold never shrinks
    assert chained["noise_carried_from"] == ["smoke", "smoke-2x"]
    for metric in ("nll", "fid"):
        assert chained["noise"][metric] == pytest.approx(result["noise"][metric])
    assert chained["runs"]["2d-random"]["nll"]["before"] == result["runs"]["2d-random"]["nll"]["after"]
    assert chained["first_budget"]["2d-random"]["nll"] == result["runs"]["2d-random"]["nll"]["before"]
    text = (project / "results/report/smoke-4x/convergence.md").read_text()
    assert "smoke (6 steps)" in text and "smoke-2x (12 steps)" in text and "smoke-4x (24 steps)" in text
    assert "`smoke` vs `smoke-2x`'s noise carries over" in text
    assert set(chained["by_step"]["quarters"][0]) == {"steps", *(f"2d-random, {label}" for label in (
        "smoke (6 steps)", "smoke-2x (12 steps)", "smoke-4x (24 steps)"))}
    runs_by_compute = {p["run"] for p in chained["by_compute"]["points"]}
    assert runs_by_compute == {"2d-random, 6 steps", "2d-random, 12 steps", "2d-random, 24 steps", "n2, 6 steps"}


@pytest.mark.usefixtures("scored")
def test_rerun_stability_splits_each_fid_move_into_extractor_and_generator(project, tmp_path):
    """A rerun of a preset (workflow.rerun_of, here with 2 threads per training job): the
    'stability' target says which verdicts hold, and scores the rerun's samples with the first
    run's classifier too, so that each run's FID move splits into generator side and extractor.
    Here the rerun pins the first run's classifier (classifier.checkpoint): the same file, so
    the extractor moves nothing."""
    import copy

    smoke = load_params(project / "params.yaml")["presets"]["smoke"]
    rerun = copy.deepcopy(smoke)
    rerun["workflow"].update(table1=["1d-raster", "2d-random"], table2=[], window_sweep=[], density_sweep=[],
                             depth_split=[], token_types=[], seeds=1, rerun_of="smoke")
    rerun["analysis"]["similarity_runs"] = ["2d-random"]
    rerun["resources"] = {"train": {"cpus": 2}}
    # the file is used as is: the smoke preset's classifier training settings would be unused
    rerun["classifier"] = {"width": smoke["classifier"]["width"], "checkpoint": "results/classifier/smoke/classifier.pt"}
    configfile = tmp_path / "smoke-rerun.yaml"
    configfile.write_text(json.dumps({"presets": {"smoke-rerun": rerun}}))  # JSON is YAML
    snakemake(project, "stability", "--configfile", str(configfile), "--config", "preset=smoke-rerun")
    out = project / "results/report/smoke-rerun"
    result = json.loads((out / "stability.json").read_text())
    assert result["kind"] == "rerun" and set(result["families"]) == {"table1"}
    split = result["extractor_split"]["runs"]
    assert set(split) == {"1d-raster", "2d-random"}
    for run, r in split.items():
        first = json.loads((project / f"results/evaluate/smoke/{run}/metrics.json").read_text())
        second = json.loads((project / f"results/evaluate/smoke-rerun/{run}/metrics.json").read_text())
        fixed = json.loads((project / f"results/evaluate/smoke-rerun/{run}/metrics_first_extractor.json").read_text())
        assert (r["first"], r["second"], r["second_first_extractor"]) == (first["fid"], second["fid"], fixed["fid"])
        assert r["by_generator"] + r["by_extractor"] == pytest.approx(second["fid"] - first["fid"])
        assert r["by_extractor"] == 0  # one extractor: the rerun's FID is the first classifier's
    assert "## Extractor or generator?" in (out / "stability.md").read_text()
    pinned = project / "results/classifier/smoke-rerun"
    assert (pinned / "classifier.pt").read_bytes() == (project / "results/classifier/smoke/classifier.pt").read_bytes()
    assert json.loads((pinned / "metrics.json").read_text())["checkpoint"] == "results/classifier/smoke/classifier.pt"


@pytest.mark.usefixtures("scored")
def test_extractor_check_rescores_the_same_samples_with_a_retrained_classifier(project):
    """scripts/extractor_check.py: a finished preset's samples scored by its classifier and by
    one retrained with other threads; the move per run, and its median against the seed SD."""
    out = project / "results/report/smoke/extractor"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/extractor_check.py"), "--preset", "smoke",
                           "--threads", "2", "--out", str(out)], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "HEPTAPOD_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    runs = resolve(load_params(project / "params.yaml"), "smoke").workflow.runs()
    assert set(result["runs"]) == set(runs)
    for run, r in result["runs"].items():
        first = json.loads((project / f"results/evaluate/smoke/{run}/metrics.json").read_text())
        assert r["first"] == first["fid"] and r["moved"] == pytest.approx(r["second"] - r["first"])
    assert (project / "results/classifier/smoke/retrained-2-threads.pt").is_file()
    assert "Median |move|" in out.with_suffix(".md").read_text()


@pytest.mark.usefixtures("scored")
def test_sample_timing_times_a_trained_generator(project):
    """scripts/sample_timing.py (step 3 of the GPU check): one line per batch and k, and the
    profiler's operator table, for a model the pipeline trained."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/sample_timing.py"),
                           "results/train/smoke/2d-random/model.pt", "--batches", "2", "6", "--positions", "1", "2",
                           "--profile"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("batch ")]
    assert [ln.split(":")[0] for ln in lines] == ["batch 2 k 1", "batch 6 k 1", "batch 2 k 2", "batch 6 k 2"]
    assert all(float(ln.split(": ")[1].rstrip(" s")) > 0 for ln in lines)
    assert "aten::" in proc.stdout


def test_dvc_repro_publishes_every_table_and_plot(project):
    """`dvc repro` drives the (cached) workflow per paper table and publishes what DVC owns;
    `dvc metrics show` lists FID/IS; `dvc plots show` renders the PNG plots without a CDN."""
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
           "HEPTAPOD_NO_PROGRESS": "1"}

    def run(*cmd):
        proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    for name in ("dvc.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "heptapod", project / "heptapod", ignore=shutil.ignore_patterns("__pycache__"))
    dvc_yaml = (project / "dvc.yaml").read_text()
    (project / "dvc.yaml").write_text(dvc_yaml.replace("preset: [default]", "preset: [smoke]")
                                      .replace("foreach: [default]", "foreach: [smoke]"))
    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "repro")
    published = project / "results/dvc/smoke"
    for family in ("table1", "table2", "table4", "fig6", "fig7", "fig8"):
        assert (published / f"{family}.json").read_bytes() == (project / f"results/report/smoke/{family}.json").read_bytes()
    assert (published / "README.md").is_file() and not (published / "table1.json").is_symlink()
    metrics = json.loads(run(sys.executable, "-m", "dvc", "metrics", "show", "--json"))
    shown = json.dumps(metrics)
    assert '"fid"' in shown and '"nll"' in shown and "2d-random" in shown
    # as a person reads it: a row per run, a column per score, no error for stages never run
    proc = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show"], cwd=project,
                          capture_output=True, text=True, env=env)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and "failed" not in (proc.stdout + proc.stderr).lower(), proc.stderr
    assert {"Path", "fid", "is", "kid", "nll"} <= set(lines[0].split()), lines[0]
    assert max(map(len, lines)) <= 100 and sum("scores/" in line for line in lines) >= 7, proc.stdout
    run(sys.executable, "-m", "dvc", "plots", "show", "-o", "plots")
    html = (project / "plots" / "index.html").read_text()
    assert "fig7.png" in html and "<img" in html
    assert "cdn" not in html.lower() or "vega" not in html.lower()  # image plots need no Vega from a CDN
    again = snakemake(project, "ablations", "--config", "preset=smoke")
    assert "Nothing to be done" in again.stdout + again.stderr  # DVC's runs left Snakemake's cache whole


def test_html_report_opens_in_a_browser(project, tmp_path):
    """`snakemake --report` writes one self-contained HTML file: a real headless browser shows
    every figure of the study and of the analyses through the report's own viewer, each
    decoded at its file's size, and fetches nothing."""
    from PIL import Image

    from browser import open_report

    snakemake(project, "ablations", "analysis", "--config", "preset=smoke")
    report = project / "results/report.html"
    snakemake(project, "--report", str(report), "ablations", "analysis", "--config", "preset=smoke")
    assert not re.search(r'(src|href)="https?://', report.read_text())
    seen = open_report(report, tmp_path / "report.png")
    assert seen["error"] is None and seen["resources"] == []  # nothing fetched, not even a file
    figures = [f"results/report/smoke/{f}.png" for f in ("table1", "table2", "table4", "fig6", "fig7", "fig8",
                                                         "training_curves", "samples")]
    figures += [f"results/report/smoke/analysis/{a}.png" for a in ("attention", "similarity", "probe", "steps")]
    assert sorted(i["path"] for i in seen["images"]) == sorted(figures)
    for image in seen["images"]:
        with Image.open(project / image["path"]) as im:
            assert image["shown"] and (image["width"], image["height"]) == im.size, image
    with Image.open(tmp_path / "report.png") as shot:  # the page as a person sees it: a figure shown
        pixels = np.asarray(shot.convert("L"))
    assert shot.size == (1400, 1000) and (pixels[:, 300:] < 128).mean() > 0.001


def dry_run_after_edit(project, old: str, new: str) -> str:
    """Dry-run 'ablations' with one edit of params.yaml (restored afterwards)."""
    params = (project / "params.yaml").read_text()
    assert old in params
    (project / "params.yaml").write_text(params.replace(old, new))
    try:
        return snakemake(project, "-n", "ablations", "--config", "preset=smoke").stdout
    finally:
        (project / "params.yaml").write_text(params)


def test_changed_sampling_params_rerun_only_downstream(project):
    out = dry_run_after_edit(project, "grid_rows: 2, progress_samples: 10}",
                             "grid_rows: 2, progress_samples: 10, temperature: 0.9}")
    assert "rule sample:" in out and "rule evaluate:" in out
    assert "rule train:" not in out and "rule train_tokenizer:" not in out


def test_changed_variant_reruns_only_that_variant(project):
    out = dry_run_after_edit(project, "  n2:\n    train: {supervision_density: 2}",
                             "  n2:\n    train: {supervision_density: 3}")
    trained = [line for line in out.splitlines() if "results/train/smoke/" in line and "output:" in line]
    assert len(trained) == 1 and "/n2/" in trained[0], trained


def test_bench_writes_the_three_ratios(project):
    snakemake(project, "all", "--config", "preset=smoke")
    bench = json.loads((project / "results/bench/smoke.json").read_text())
    assert bench["train"]["head_step_ratio"] > 0
    assert 0 < bench["sample"]["backbone_share_kv_cache"] < 1
    assert bench["loader"]["loader_to_train_ratio"] > 0
    assert bench["parallel_decoding"]["k=4"]["images_per_s"] > 0 and bench["one_d_cache_16x16"]["kv_cache_speedup"] > 0
    # the speed target: the headline run at every k, with the 1D baseline's images/s beside it
    speed = json.loads((project / "results/report/smoke/speed.json").read_text())
    assert [r["k"] for r in speed["rows"]] == [1, 4] and speed["rows"][1]["head_calls"] == 16
    assert all(r["images_per_s"] > 0 and r["fid"] >= 0 for r in speed["rows"])
    assert set(speed["baselines_images_per_s"]) == {"1d-raster"}
    assert (project / "results/report/smoke/speed.png").stat().st_size > 1000


def trained_steps(project, run: str) -> int:
    log = [json.loads(line) for line in (project / f"results/train/smoke/{run}/log.jsonl").open()]
    return max(r["step"] for r in log)


def test_config_overrides_reach_the_training_job(project, tmp_path):
    """What Snakemake resolved is what the job runs: a --config override and a --configfile each
    retrain the run with their own step count (the stale resumable state is restarted)."""
    model = "results/train/smoke/n2/model.pt"
    snakemake(project, model, "--config", "preset=smoke", "presets={smoke: {train: {steps: 5}}}")
    assert trained_steps(project, "n2") == 5
    mine = tmp_path / "mine.yaml"
    mine.write_text("presets:\n  smoke:\n    train: {steps: 4}\n")
    snakemake(project, model, "--configfile", str(mine), "--config", "preset=smoke")
    assert trained_steps(project, "n2") == 4
    snapshots = sorted(p.name for p in (project / "results/train/smoke/n2/snapshots").iterdir())
    assert snapshots == ["step-0000001.pt", "step-0000003.pt"]  # step 2 of the 5-step run is gone


def test_every_subcommand_runs_with_only_its_required_arguments(project, tmp_path, monkeypatch, capsys):
    """Each stage on its own, given only what its --help marks required: it works, or it stops
    with one line that names what is missing; never a traceback."""
    from heptapod.cli import build_parser, main

    monkeypatch.chdir(project)
    monkeypatch.setenv("HEPTAPOD_NO_PROGRESS", "1")
    r, out = "results/{}/smoke/", str(tmp_path / "out")
    data, lat, tok = r.format("data"), r.format("latents") + "vq/", r.format("tokenizer") + "vq/tokenizer.pt"
    run, samples = r.format("train") + "2d-random", r.format("sample") + "2d-random/samples.h5"
    evaluated = r.format("evaluate") + "2d-random/"
    run_files = ["--metrics", evaluated + "metrics.json", "--likelihood", evaluated + "likelihood.json",
                 "--models", run + "/model.pt", "--logs", run + "/log.jsonl"]
    required = {
        "prepare": ["--split", "test", "--out", out + ".h5"],
        "train-classifier": ["--train", data + "train.h5", "--test", data + "test.h5", "--out", out + ".pt",
                             "--metrics", out + ".json"],
        "train-tokenizer": ["--kind", "vq", "--out", out + ".pt"],
        "evaluate-tokenizer": ["--tokenizer", tok, "--images", data + "test.h5", "--out", out + ".json",
                               "--png", out + ".png"],
        "extract-latents": ["--tokenizer", tok, "--images", data + "test.h5", "--out", out + ".h5"],
        "merge-latents": ["--parts", lat + "test.h5", "--out", out + ".h5"],
        "train": ["--latents", lat + "train.h5", "--out-dir", out],
        "sample": ["--model", run + "/model.pt", "--tokenizer", tok, "--out", out + ".h5"],
        "merge-samples": ["--parts", samples, "--out", out + ".h5", "--grid", out + ".png"],
        "export-samples": ["--samples", samples, "--npz", out + ".npz", "--png-dir", out],
        "evaluate": ["--samples", samples, "--out", out + ".json"],
        "likelihood": ["--model", run + "/model.pt", "--latents", lat + "test.h5", "--out", out + ".json"],
        "noise-floor": ["--train", data + "train.h5", "--out", out + ".json"],
        "speed": ["--model", run + "/model.pt", "--tokenizer", tok, "--out-dir", out],
        "progress": ["--train-dir", run, "--tokenizer", tok, "--out", out + ".json"],
        "reference-stats": ["--images", data + "test.h5", "--out", out + ".npz"],
        "report-family": ["--family", "table2", "--runs", "2d-random", *run_files, "--floor",
                          r.format("evaluate") + "noise_floor.json", "--out-dir", out],
        "report": ["--runs", "2d-random", *run_files, "--grids", r.format("sample") + "2d-random/grid.png",
                   "--families", r.format("report") + "table2.json", "--floor",
                   r.format("evaluate") + "noise_floor.json", "--out-dir", out],
        "index": ["--report", r.format("report") + "README.md", "--out", out + ".md"],
        "stability": ["--first", r.format("report"), "--second", r.format("report"), "--out", out + ".md"],
        "convergence": ["--runs", "2d-random", *run_files, "--latents", lat + "test.h5",
                        *[f"--shorter-{a[2:]}" if a.startswith("--") else a for a in run_files],
                        "--shorter-latents", lat + "test.h5", "--first-runs", "2d-random",
                        *[f"--first-{a[2:]}" if a.startswith("--") else a for a in run_files], "--first-floor",
                        r.format("evaluate") + "noise_floor.json", "--out", out + ".md"],
        "publish": ["--src", r.format("report"), "--out-dir", out],
        "bench": ["--latents", lat + "train.h5", "--out", out + ".json"],
        "bench-scale": ["--batches", "2", "--steps", "1", "--positions", "--out", out + ".json"],
        "analyze": ["--name", "attention", "--runs", "2d-random", "--models", run + "/model.pt", "--latents",
                    lat + "test.h5", "--out-dir", out],
        "schema": [], "params": [], "model-params": [], "status": [], "record": [], "park": [],
    }
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(required) == set(commands)  # a new subcommand gets a line here
    for command, args in required.items():
        shutil.rmtree(tmp_path, ignore_errors=True)
        tmp_path.mkdir()
        capsys.readouterr()
        code = main([command, "--preset", "smoke", *args])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("heptapod ")]
        assert code in (0, 2), command
        if code == 2:  # a one-line error naming the command
            assert len(err) == 1 and err[0].startswith(f"heptapod {command}: error:"), (command, err)


def test_hard_kill_then_the_readme_unlock_instructions_finish_the_run(tmp_path):
    """SIGKILL leaves Snakemake's lock; the README's resume paragraph (the same command plus
    --unlock, then the command again) finishes the run."""
    copy_workflow(tmp_path)
    target = ["results/classifier/smoke/classifier.pt", "--config", "preset=smoke"]
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", *target], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "HEPTAPOD_NO_PROGRESS": "1"})
    locks = tmp_path / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.iterdir()) and (tmp_path / "results/logs").is_dir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = snakemake(tmp_path, *target, check=False)
    assert again.returncode != 0 and "cannot be locked" in (again.stdout + again.stderr).lower()
    snakemake(tmp_path, *target, "--unlock")
    snakemake(tmp_path, *target)
    assert (tmp_path / "results/classifier/smoke/classifier.pt").stat().st_size > 0
