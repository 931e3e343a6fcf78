import numpy as np
import torch

from heptapod.data.store import write_arrays
from PIL import Image

from heptapod.sample import balanced_labels, export_samples, tokens_to_latents


def test_balanced_labels():
    labels = balanced_labels(25, 10)
    assert np.bincount(labels.numpy()).tolist() == [3] * 5 + [2] * 5


def test_tokens_to_latents_layout():
    ids = torch.arange(2 * 16).view(2, 16)
    assert torch.equal(tokens_to_latents(ids, 4)[1, 2], ids[1, 8:12])  # raster rows
    cont = torch.randn(2, 16, 3)
    grid = tokens_to_latents(cont, 4)
    assert grid.shape == (2, 3, 4, 4) and torch.equal(grid[1, :, 2, 1], cont[1, 9])


def test_export_adm_npz_and_pngs(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8)).astype(np.uint8)
    write_arrays(tmp_path / "s.h5", "samples", {"images": images, "labels": np.arange(5) % 3}, {})
    export_samples(tmp_path / "s.h5", tmp_path / "s.npz", tmp_path / "png")
    with np.load(tmp_path / "s.npz") as f:
        assert f["arr_0"].shape == (5, 8, 8, 3) and f["arr_0"].dtype == np.uint8
        assert np.array_equal(f["arr_0"][..., 2], images[:, 0]) and list(f["arr_1"]) == [0, 1, 2, 0, 1]
    pngs = sorted((tmp_path / "png").iterdir())
    assert [p.name for p in pngs] == ["000000_0.png", "000001_1.png", "000002_2.png", "000003_0.png", "000004_1.png"]
    assert np.array_equal(np.asarray(Image.open(pngs[3]))[..., 0], images[3, 0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
