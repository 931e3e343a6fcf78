"""The ImageNet path of the workflow, end to end on a tiny stand-in: an ImageFolder tree of RGB
images, checkpoints in the published LlamaGen/MAR layouts (random weights, narrow), torch-fidelity's
Inception network (random weights, made here: the real file is a download), FID against a
reference-statistics file as with ADM's batch, sharded latents and samples, the npz/PNG export."""
import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import ROOT, copy_workflow
from heptapod.config import load_params, resolve
from heptapod.tokenizers.published import LlamaGenVQConfig, MARKLConfig, build_published

pytestmark = pytest.mark.workflow


def fake_inception_weights(path):
    """A weights file in torch-fidelity's Inception layout, with random weights that keep the
    activations' scale through its ~100 layers (the default init lets features vanish)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None):
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=m.in_features ** -0.5)
    torch.save(model.state_dict(), path)
    return path


def image_folder(root, split, per_class):
    rng = np.random.default_rng(len(split))
    for c in range(2):
        folder = root / split / f"n0000000{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((80, 96, 3), np.uint8)
            base[..., c] = 200  # class 0 reddish, class 1 greenish
            noise = rng.integers(0, 50, base.shape).astype(np.uint8)
            Image.fromarray(base + noise).save(folder / f"img{i}.JPEG")


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("standin")
    image_folder(tmp / "imagenet", "train", 8)
    image_folder(tmp / "imagenet", "val", 4)
    torch.manual_seed(0)
    for kind, cfg in (("vq", LlamaGenVQConfig(ch=32)), ("kl", MARKLConfig(ch=32))):
        torch.save({"model": build_published(kind, cfg).state_dict()}, tmp / f"{kind}.ckpt")
    weights = fake_inception_weights(tmp / "inception.pth")
    # reference statistics of the held-out images, stored as ADM's batch stores them (mu, sigma)
    from heptapod.data.images import center_crop_resize
    from heptapod.evaluation.fidelity import reference_statistics

    val = np.stack([np.asarray(center_crop_resize(Image.open(p).convert("RGB"), 64)).transpose(2, 0, 1)
                    for p in sorted((tmp / "imagenet" / "val").rglob("*.JPEG"))])
    stats = reference_statistics(val, dataclasses.replace(resolve(load_params(ROOT / "params.yaml"), "smoke").evaluate,
                                                    inception_weights=str(weights), reference_stats=None,
                                                    kid_subset_size=8, batch_size=8), None)
    np.savez(tmp / "ref.npz", mu=stats["mu"], sigma=stats["sigma"], arr_0=val.transpose(0, 2, 3, 1))

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    preset = copy.deepcopy(params["presets"]["imagenet-l"])  # the paper-scale preset, shrunk
    preset["data"].update(root=str(tmp / "imagenet"), image_size=64)
    preset["tokenizer"].update(width=32, eval_images=8, vq_checkpoint=str(tmp / "vq.ckpt"),
                               kl_checkpoint=str(tmp / "kl.ckpt"))
    preset["latents"].update(batch_size=6, chunk_rows=4, shards=2, workers=0)
    preset["model"] = dict(width=32, backbone_depth=1, head_depth=1, num_heads=2, tokens="continuous",
                           diffloss_width=32, diffloss_depth=1)
    preset["train"].update(steps=4, batch_size=8, grad_accum=1, warmup_steps=1, snapshots=1, ckpt_every=2,
                           log_every=1)
    preset["sample"].update(num_samples=8, batch_size=4, shards=2, progress_samples=4)
    preset["evaluate"].update(inception_weights=str(weights), reference_stats=str(tmp / "ref.npz"),
                              kid_subset_size=4, batch_size=8)
    preset["workflow"] = dict(table1=[], table2=["2d-random"], window_sweep=[], density_sweep=[],
                              depth_split=[], token_types=["2d-random-vq", "2d-random"], seeds=1, device="cpu")
    preset["resources"] = copy.deepcopy(params["defaults"]["resources"])
    params["presets"]["standin"] = preset

    project = tmp / "project"
    project.mkdir()
    copy_workflow(project, params=False)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "HEPTAPOD_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "ablations", "--config",
                           "preset=standin"], cwd=project, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return project, tmp


def test_imagenet_path_end_to_end(standin):
    project, tmp = standin
    results = project / "results"
    # the data stage indexed the ImageFolder (train and val) instead of copying pixels
    with __import__("h5py").File(results / "data/standin/test.h5") as f:
        assert "files" in f and len(f["files"]) == 8 and "images" not in f
    # latents from the imported published tokenizers, 4x4 grid of 64 px images, image + flip
    with __import__("h5py").File(results / "latents/standin/kl/train.h5") as f:
        assert f["moments"].shape == (16, 2, 32, 4, 4) and f.attrs["latent_scale"] == pytest.approx(0.2325)
        assert f.attrs["tokenizer"] == "kl" and not list((results / "latents/standin/kl").glob("*part*"))
    with __import__("h5py").File(results / "latents/standin/vq/train.h5") as f:
        assert f["codes"].shape == (16, 2, 4, 4) and f.attrs["vocab_size"] == 16384
    # FID/IS with the Inception network against the reference statistics (no KID without features)
    for run in ("2d-random", "2d-random-vq"):
        m = json.loads((results / f"evaluate/standin/{run}/metrics.json").read_text())
        assert m["extractor"] == "Inception" and m["reference"] == str(tmp / "ref.npz")
        assert math.isfinite(m["fid"]) and m["fid"] > 0 and m["is"] >= 1.0 and m["kid"] is None
    tok = json.loads((results / "tokenizer/standin/kl/metrics.json").read_text())
    assert tok["extractor"] == "Inception" and math.isfinite(tok["rfid"])  # vs the originals
    # the headline run in the formats of the field: ADM npz and one PNG per sample
    with np.load(results / "sample/standin/2d-random/samples.npz") as f:
        assert f["arr_0"].shape == (8, 64, 64, 3) and f["arr_0"].dtype == np.uint8
        assert sorted(f["arr_1"].tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len(list((results / "sample/standin/2d-random/png").glob("*.png"))) == 8
    report = results / "report/standin"
    text = (report / "README.md").read_text()
    assert "FID (Inception)" in text and "Table 2 analogue" in text and "Fig. 6 analogue" in text
    t2 = json.loads((report / "table2.json").read_text())
    assert t2["paper"] == {}  # a stand-in has no row of its own in the paper's Table 2 ...
    assert "for reference" in (report / "table2.md").read_text()  # ... which is listed beside it


def test_paper_rows_are_matched_by_what_a_run_is():
    from heptapod import paper

    assert paper.table2_key("imagenet-l") == "heptapod-l" and paper.table2_key("gpu") is None
    assert paper.table1_key("1d", "raster") == "1d-raster" and paper.table1_key("global", "random") == "2d-random"
    assert paper.table1_key("global", "raster") is None  # the extra 2D-raster row has no paper number
    assert [paper.table4_key(*d) for d in ((31, 1), (24, 8), (16, 16), (7, 1), (6, 2), (4, 4))] == \
        ["31/1", "24/8", "16/16"] * 2


def test_paper_table_on_a_cluster_plans_the_intended_jobs(tmp_path):
    """`snakemake table2 --config preset=imagenet-l` (the README's cluster command, dry run, with
    the preset's paths pointing at files that exist): 8 extraction and 8 sampling shards, one
    8-GPU training job under torchrun, SLURM resources from params.yaml on every job."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    base = params["presets"]["imagenet-b"]  # the L and H presets inherit its paths
    for section, key in (("tokenizer", "kl_checkpoint"), ("tokenizer", "vq_checkpoint"),
                         ("evaluate", "inception_weights"), ("evaluate", "reference_stats")):
        assert base[section][key].startswith("/path/to/")  # placeholders a user replaces once
        base[section][key] = str(tmp_path / key)
        (tmp_path / key).touch()
    copy_workflow(tmp_path, params=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "64", "table2",
                           "--config", "preset=imagenet-l"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    # train and val splits: the val latents give the held-out NLL and the per-snapshot validation
    assert counts["extract_latents"] == 16 and counts["merge_latents"] == 2
    assert counts["sample"] == 8 and counts["merge_samples"] == 1 and counts["train"] == 1
    assert "train_classifier" not in counts  # Inception replaces the dataset classifier
    assert "--nproc 8" in out and "--checkpoint" in out
    assert "gpu=8" in out and "runtime=2880" in out and "cpus_per_task=64" in out
