"""FID / IS / KID (and precision / recall) with torch-fidelity, offline.

Inception weights are a run-time download, so for small datasets the feature extractor is a
classifier trained on the dataset itself (its own pipeline stage), registered with
torch-fidelity: penultimate features for FID/KID, class logits for IS. Given a local file of
torch-fidelity's Inception weights, the real Inception network is used instead. Every metric
dict carries the name of the extractor, and reports label numbers with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from heptapod.config import ClassifierConfig, EvaluateConfig
from heptapod.data.images import to_float
from heptapod.utils.io import copy_pinned, file_sha256, load_checkpoint, save_checkpoint
from heptapod.utils.training import progress


class Classifier(nn.Module):
    """Small CNN: the dataset's own 'Inception' (features for FID/KID, logits for IS)."""

    def __init__(self, channels: int, num_classes: int, width: int):
        super().__init__()
        w = width

        def conv(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

        self.body = nn.Sequential(
            *conv(channels, w), *conv(w, w), nn.MaxPool2d(2),
            *conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2),
            *conv(2 * w, 4 * w), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.features = nn.Linear(16 * w, 8 * w)
        self.logits = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [-1, 1] (B, C, H, W) -> (features (B, 8w) before the ReLU, logits (B, K))."""
        f = self.features(self.body(x))
        return f, self.logits(F.relu(f))


def build_classifier(meta: dict) -> Classifier:
    return Classifier(meta["channels"], meta["num_classes"], meta["width"])


def train_classifier(cfg: ClassifierConfig, train: tuple[np.ndarray, np.ndarray],
                     test: tuple[np.ndarray, np.ndarray], num_classes: int, out: str | Path,
                     device: torch.device = torch.device("cpu"), dataset: str | None = None) -> dict:
    """Train on the train split (on ``device``; batches are drawn on the CPU, so the draws do
    not depend on it), report test accuracy, save an atomic checkpoint."""
    images, labels = train
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    meta = {"channels": images.shape[1], "num_classes": num_classes, "width": cfg.width, "dataset": dataset}
    # channels-last convolutions are ~1.5x faster on CPU; the weights are the same tensors
    model = build_classifier(meta).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps)
    model.train()
    bar = progress(cfg.steps, desc="classifier", unit="step")
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)
        x = to_float(images[idx.numpy()])
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x.to(device))[1], torch.as_tensor(labels[idx.numpy()]).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update()
    bar.close()
    model.eval()
    accuracy = classifier_accuracy(model, *test)
    save_checkpoint(out, {"kind": "classifier", "meta": meta, "state_dict": model.state_dict(),
                          "test_accuracy": accuracy})
    return {"test_accuracy": accuracy, "steps": cfg.steps}


@torch.no_grad()
def classifier_accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    correct, device = 0, next(model.parameters()).device
    for lo in range(0, len(images), 1000):
        logits = model(to_float(images[lo:lo + 1000]).to(device))[1].cpu()
        correct += int((logits.argmax(1) == torch.as_tensor(labels[lo:lo + 1000])).sum())
    return correct / len(images)


def pin_classifier(path: str | Path, test: tuple[np.ndarray, np.ndarray], num_classes: int,
                   out: str | Path, dataset: str | None = None, width: int | None = None) -> dict:
    """Use a trained classifier as is (classifier.checkpoint): check that it fits the data set
    (its shape, and its data set where the file records one: MNIST and Fashion-MNIST have the same
    shape) and the preset's classifier.width, measure its test accuracy here, and copy it byte for
    byte to ``out``."""
    ckpt = load_checkpoint(path, "classifier")
    model, meta = classifier_from(ckpt), ckpt["meta"]
    channels = test[0].shape[1]
    if (meta["channels"], meta["num_classes"]) != (channels, num_classes):
        raise ValueError(f"classifier.checkpoint {path}: made for {meta['channels']} channel(s) and "
                         f"{meta['num_classes']} classes, but the data set has {channels} and {num_classes}")
    if width is not None and meta.get("width", width) != width:
        raise ValueError(f"classifier.checkpoint {path}: width is {meta['width']} in the file, "
                         f"{width} in classifier.width")
    if dataset and meta.get("dataset") and meta["dataset"] != dataset:
        raise ValueError(f"classifier.checkpoint {path}: trained on {meta['dataset']}, but the data set is {dataset}")
    return {"test_accuracy": classifier_accuracy(model, *test), **copy_pinned(path, out)}


def classifier_from(ckpt: dict) -> Classifier:
    """The classifier of a loaded checkpoint, in eval mode."""
    model = build_classifier(ckpt["meta"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def load_classifier(path: str | Path) -> Classifier:
    return classifier_from(load_checkpoint(path, "classifier"))


class _ClassifierExtractor(FeatureExtractorBase):
    """torch-fidelity adapter: uint8 (B, 3, H, W) in, (features, logits) out as requested."""

    FEATURES = ("features", "logits_unbiased")

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.model = load_classifier(feature_extractor_weights_path)
        self.channels = self.model.body[0].in_channels

    @staticmethod
    def get_provided_features_list():
        return _ClassifierExtractor.FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "features", "kid": "features",
                "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x[:, :self.channels] if self.channels < x.shape[1] else x  # gray was repeated to 3
        feats, logits = self.model(x.float().div(127.5).sub(1.0))
        out = {"features": feats, "logits_unbiased": logits}
        return tuple(out[name].double() for name in self.features_list)


def classifier_extractor_name(path: str | Path) -> str:
    """Registered name carries the weights' hash: torch-fidelity keys caches by name only."""
    digest = file_sha256(path)[:12]
    name = f"heptapod-classifier-{digest}"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, _ClassifierExtractor)
    return name


class _Uint8Images(torch.utils.data.Dataset):
    """Images as torch-fidelity wants them: uint8 (3, H, W); gray repeated to 3 channels."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.images[i]))
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def _extractor(cfg: EvaluateConfig, classifier_path: str | Path | None) -> tuple[str, str, str]:
    """(torch-fidelity extractor name, weights path, label for reports)."""
    if cfg.inception_weights:
        if not Path(cfg.inception_weights).is_file():
            raise FileNotFoundError(f"evaluate.inception_weights: file not found: {cfg.inception_weights}")
        return "inception-v3-compat", cfg.inception_weights, "Inception"
    if classifier_path is None:
        raise ValueError("a dataset classifier checkpoint is needed when no Inception weights are set")
    return classifier_extractor_name(classifier_path), str(classifier_path), "dataset classifier"


def _features(images: np.ndarray, cfg: EvaluateConfig, classifier_path) -> tuple[dict, str, str, str]:
    """torch-fidelity features of uint8 images: (features by layer, FID layer, IS layer, label)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    name, weights, label = _extractor(cfg, classifier_path)
    cls = FEATURE_EXTRACTORS_REGISTRY[name]
    fid_layer, isc_layer = (cls.get_default_feature_layer_for_metric(m) for m in ("fid", "isc"))
    cuda = torch.cuda.is_available()
    fe = create_feature_extractor(name, [fid_layer, isc_layer], cuda=cuda, verbose=False,
                                  feature_extractor_weights_path=weights)
    feats = get_featuresdict_from_dataset(_Uint8Images(images), fe, cfg.batch_size, cuda, True, False)
    return feats, fid_layer, isc_layer, label


def reference_statistics(images: np.ndarray, cfg: EvaluateConfig, classifier_path) -> dict:
    """FID statistics (mu, sigma; float64) of a reference image set, as in ADM's reference npz."""
    feats, fid_layer, _, label = _features(images, cfg, classifier_path)
    stats = fid_features_to_statistics(feats[fid_layer].double())
    return {"mu": stats["mu"], "sigma": stats["sigma"], "extractor": label, "images": len(images)}


def isc_splits(num_fake: int) -> int:
    """IS is averaged over 10 splits of the samples (the field's convention); fewer samples than
    splits would leave empty splits and a NaN score."""
    return max(1, min(10, num_fake))


def fidelity_vs_reference_stats(fake: np.ndarray, cfg: EvaluateConfig, classifier_path) -> dict:
    """FID against ``evaluate.reference_stats`` (an npz with mu and sigma) and IS of ``fake``.

    KID needs the reference features themselves, which a statistics file does not hold.
    """
    path = Path(cfg.reference_stats)
    if not path.is_file():
        raise FileNotFoundError(f"evaluate.reference_stats: file not found: {path}")
    with np.load(path) as ref:
        if "mu" not in ref or "sigma" not in ref:
            raise ValueError(f"{path}: expected arrays 'mu' and 'sigma' (found {', '.join(ref.files)})")
        reference = {"mu": ref["mu"].astype(np.float64), "sigma": ref["sigma"].astype(np.float64)}
    feats, fid_layer, isc_layer, label = _features(fake, cfg, classifier_path)
    stats = fid_features_to_statistics(feats[fid_layer].double())
    if stats["mu"].shape != reference["mu"].shape:
        raise ValueError(f"{path}: statistics of dimension {reference['mu'].shape[0]}, but the "
                         f"{label} gives {stats['mu'].shape[0]} features")
    fid = fid_statistics_to_metric(stats, reference, verbose=False)["frechet_inception_distance"]
    isc = isc_featuresdict_to_metric(feats, isc_layer, verbose=False, isc_splits=isc_splits(len(fake)))
    return {"fid": float(fid), "is": float(isc["inception_score_mean"]),
            "is_std": float(isc["inception_score_std"]), "kid": None, "kid_std": None,
            "precision": None, "recall": None, "extractor": label, "num_fake": len(fake), "num_real": None,
            "reference": str(path)}


PRC_NEIGHBOURS = 3  # torch-fidelity's prc_neighborhood default, as in Kynkaenniemi et al.


def fidelity_metrics(fake: np.ndarray, real: np.ndarray | None, cfg: EvaluateConfig,
                     classifier_path: str | Path | None, precision_recall: bool = False) -> dict:
    """FID, IS (of ``fake``) and KID of uint8 image arrays (N, C, H, W); with ``precision_recall``
    also improved precision and recall (Kynkaenniemi et al. 2019: the share of samples inside the
    real images' k-NN manifold, k = 3, and of real images inside the samples'), which split FID's
    one number into fidelity and diversity. They cost a k-NN pass over the real images, so only the
    final scores and the noise floor ask for them.

    With ``evaluate.reference_stats`` set, FID is taken against those statistics instead (and
    neither KID nor precision/recall, which need the reference features, is given).
    """
    if cfg.reference_stats:
        return fidelity_vs_reference_stats(fake, cfg, classifier_path)
    extractor, weights, label = _extractor(cfg, classifier_path)
    kid_subset = min(cfg.kid_subset_size, len(fake), len(real))
    precision_recall = precision_recall and min(len(fake), len(real)) > PRC_NEIGHBOURS  # k-NN radii need k + 1
    m = torch_fidelity.calculate_metrics(
        input1=_Uint8Images(fake), input2=_Uint8Images(real), fid=True, isc=True, kid=True,
        prc=precision_recall, prc_neighborhood=PRC_NEIGHBOURS, kid_subset_size=kid_subset,
        isc_splits=isc_splits(len(fake)), batch_size=cfg.batch_size, cuda=torch.cuda.is_available(),
        feature_extractor=extractor, feature_extractor_weights_path=weights, cache=False,
        verbose=False, save_cpu_ram=True,
    )
    return {
        "fid": float(m["frechet_inception_distance"]),
        "is": float(m["inception_score_mean"]),
        "is_std": float(m["inception_score_std"]),
        "kid": float(m["kernel_inception_distance_mean"]),
        "kid_std": float(m["kernel_inception_distance_std"]),
        "precision": float(m["precision"]) if precision_recall else None,
        "recall": float(m["recall"]) if precision_recall else None,
        "extractor": label,
        "num_fake": len(fake),
        "num_real": len(real),
    }
