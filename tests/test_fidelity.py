import dataclasses

import numpy as np
import pytest
import torch

from heptapod.evaluation.fidelity import fidelity_metrics, train_classifier
from conftest import ROOT
from heptapod.config import ClassifierConfig, load_params, resolve


def toy_images(n, seed, noise):
    """Two classes of 16x16 gray images: a bright square left or right, plus noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 16, 16), np.float32)
    labels = np.arange(n) % 2
    for i, y in enumerate(labels):
        x[i, 0, 4:12, (2 if y == 0 else 8):(6 if y == 0 else 14)] = 200
    x += rng.normal(0, noise, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("clf") / "classifier.pt"
    cfg = ClassifierConfig(steps=30, batch_size=32, lr=3e-3, width=4, seed=0, checkpoint=None)
    torch.set_num_threads(1)
    out = train_classifier(cfg, toy_images(256, 0, 20), toy_images(128, 1, 20), 2, path, dataset="toy")
    assert out["test_accuracy"] > 0.9
    return path


EVAL = dataclasses.replace(resolve(load_params(ROOT / "params.yaml"), "smoke").evaluate, inception_weights=None,
                           reference_stats=None, kid_subset_size=50, batch_size=64)


def test_fid_separates_real_from_noise(classifier):
    real, _ = toy_images(200, 2, 20)
    same, _ = toy_images(200, 3, 20)
    noise = np.random.default_rng(4).integers(0, 256, real.shape).astype(np.uint8)
    close = fidelity_metrics(same, real, EVAL, classifier)
    far = fidelity_metrics(noise, real, EVAL, classifier)
    assert close["extractor"] == "dataset classifier"
    assert close["fid"] < far["fid"] and close["kid"] < far["kid"]
    assert close["is"] > far["is"]  # confident, balanced predictions on real-like images
    assert close["precision"] is None and close["recall"] is None  # asked for only where reported
    close, far = (fidelity_metrics(x, real, EVAL, classifier, precision_recall=True) for x in (same, noise))
    assert close["precision"] > 0.5 and close["recall"] > 0.5
    assert far["precision"] < close["precision"] and far["recall"] < close["recall"]
    few = fidelity_metrics(same[:3], real, EVAL, classifier, precision_recall=True)  # no 3 neighbours
    assert few["precision"] is None and few["recall"] is None and few["fid"] > 0


def test_missing_inception_weights_are_named(classifier, tmp_path):
    cfg = dataclasses.replace(EVAL, inception_weights=str(tmp_path / "pt_inception.pth"))
    real, _ = toy_images(10, 2, 20)
    with pytest.raises(FileNotFoundError, match="pt_inception.pth"):
        fidelity_metrics(real, real, cfg, classifier)


def test_fid_against_reference_statistics_matches_direct_fid(classifier, tmp_path):
    """The ADM-style path (FID vs a statistics npz) equals torch-fidelity's direct FID."""
    from heptapod.evaluation.fidelity import reference_statistics

    real, _ = toy_images(200, 2, 20)
    fake, _ = toy_images(150, 5, 35)
    stats = reference_statistics(real, EVAL, classifier)
    np.savez(tmp_path / "ref.npz", mu=stats["mu"], sigma=stats["sigma"])
    direct = fidelity_metrics(fake, real, EVAL, classifier)
    via_stats = fidelity_metrics(fake, None, dataclasses.replace(EVAL, reference_stats=str(tmp_path / "ref.npz")),
                                 classifier)
    assert via_stats["fid"] == pytest.approx(direct["fid"], rel=1e-4)
    assert via_stats["is"] == pytest.approx(direct["is"], rel=1e-6)
    np.savez(tmp_path / "bad.npz", mean=stats["mu"])
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        fidelity_metrics(fake, None, dataclasses.replace(EVAL, reference_stats=str(tmp_path / "bad.npz")),
                         classifier)


def test_pinned_classifier_is_the_same_extractor_byte_for_byte(classifier, tmp_path):
    """classifier.checkpoint: the file is used as is (FIDs compare across machines), its accuracy
    is measured again, and a classifier made for other data or a broken file is named."""
    from heptapod.evaluation.fidelity import classifier_accuracy, load_classifier, pin_classifier
    from heptapod.utils.io import CheckpointError, file_sha256

    test = toy_images(128, 1, 20)
    out = pin_classifier(classifier, test, 2, tmp_path / "pinned.pt")
    assert (tmp_path / "pinned.pt").read_bytes() == classifier.read_bytes()
    assert out["test_accuracy"] == classifier_accuracy(load_classifier(classifier), *test) > 0.9
    assert out["checkpoint"] == str(classifier) and out["checkpoint_sha256"] == file_sha256(classifier)
    with pytest.raises(ValueError, match="made for 1 channel.*and 2 classes, but the data set has 1 and 10"):
        pin_classifier(classifier, test, 10, tmp_path / "other.pt")
    # the same shape, another data set (MNIST vs Fashion-MNIST): named by the file's record
    with pytest.raises(ValueError, match="trained on toy, but the data set is mnist"):
        pin_classifier(classifier, test, 2, tmp_path / "other.pt", "mnist")
    assert pin_classifier(classifier, test, 2, tmp_path / "same.pt", "toy")["test_accuracy"] > 0.9
    assert pin_classifier(classifier, test, 2, tmp_path / "same.pt", "toy", width=4)["test_accuracy"] > 0.9
    with pytest.raises(ValueError, match=r"width is 4 in the file, 99 in classifier.width"):
        pin_classifier(classifier, test, 2, tmp_path / "other.pt", "toy", width=99)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt"):
        pin_classifier(tmp_path / "broken.pt", test, 2, tmp_path / "x.pt")
    assert not (tmp_path / "other.pt").exists() and not (tmp_path / "x.pt").exists()
