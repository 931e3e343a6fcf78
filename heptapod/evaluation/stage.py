"""Evaluation stages: tokenizer reconstruction (MSE, PSNR, codebook use, rFID) and samples (FID/IS/KID)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from heptapod.config import Config
from heptapod.data.images import load_images
from heptapod.data.store import read_arrays
from heptapod.evaluation.fidelity import fidelity_metrics
from heptapod.tokenizers.stage import load_tokenizer, reconstruct
from heptapod.utils.device import resolve_device
from heptapod.utils.io import atomic_path, load_checkpoint, read_json


def evaluate_tokenizer(cfg: Config, tokenizer_path: str | Path, test_images: str | Path,
                       classifier_path: str | Path, recon_png: str | Path) -> dict:
    model = load_tokenizer(tokenizer_path).to(resolve_device(cfg.workflow.device))
    images, _, _ = load_images(test_images, limit=cfg.tokenizer.eval_images)
    recon, codes = reconstruct(model, images, cfg.evaluate.batch_size)
    err = (recon.astype(np.float64) - images.astype(np.float64)) / 255.0
    mse = float(np.mean(err ** 2))
    # rFID compares reconstructions with their originals, never with reference statistics
    rfid = fidelity_metrics(recon, images, dataclasses.replace(cfg.evaluate, reference_stats=None),
                            classifier_path)
    out = {"kind": model.spec.kind, "mse": mse, "psnr": float(10 * np.log10(1.0 / mse)),
           "rfid": rfid["fid"], "extractor": rfid["extractor"], "images": len(images),
           "grid_size": int(codes.shape[-1])}
    if model.spec.kind == "vq":
        counts = np.bincount(codes.ravel(), minlength=model.spec.codebook_size)
        p = counts / counts.sum()
        out.update(codebook_used=int((counts > 0).sum()), codebook_size=model.spec.codebook_size,
                   codebook_perplexity=float(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0])))))
    else:
        out.update(latent_channels=model.spec.code_dim, latent_scale=model.latent_scale)
    pairs = np.stack([images[:32], recon[:32]], axis=1).reshape(-1, *images.shape[1:])
    with atomic_path(recon_png) as tmp:
        save_image(make_grid(torch.from_numpy(pairs).float() / 255, nrow=16, padding=1, pad_value=0.5), tmp)
    return out


def reference_images(cfg: Config, test_images: str | Path | None) -> np.ndarray | None:
    """Held-out real images for FID/KID, or None when ``evaluate.reference_stats`` replaces them."""
    if cfg.evaluate.reference_stats:
        return None
    if test_images is None:
        raise ValueError("held-out images (--real) are needed when evaluate.reference_stats is not set")
    return load_images(test_images)[0]


def evaluate_samples(cfg: Config, samples_path: str | Path, test_images: str | Path | None,
                     classifier_path: str | Path | None, classifier_metrics: str | Path | None) -> dict:
    arrays, attrs = read_arrays(samples_path, "samples", ("images", "labels"))
    metrics = fidelity_metrics(arrays["images"], reference_images(cfg, test_images), cfg.evaluate,
                               classifier_path, precision_recall=True)
    if metrics["extractor"] == "dataset classifier":  # the checkpoint records it too
        metrics["classifier_test_accuracy"] = (read_json(classifier_metrics)["test_accuracy"] if classifier_metrics
                                               else load_checkpoint(classifier_path, "classifier")["test_accuracy"])
    metrics["dataset"] = cfg.data.dataset
    metrics["temperature"] = attrs["temperature"]
    metrics["positions_per_step"] = int(attrs.get("positions_per_step", 1))
    metrics["sampling_steps"] = int(attrs.get("sampling_steps", 0))
    return metrics


def balanced_draw(labels: np.ndarray, count: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``count`` images without replacement, as many per class as the samples have."""
    per_class = np.bincount(np.arange(count) % num_classes, minlength=num_classes)
    picks = []
    for c, k in enumerate(per_class):
        pool = np.flatnonzero(labels == c)
        if len(pool) < k:
            raise ValueError(f"noise floor: class {c} has {len(pool)} train images, {k} needed")
        picks.append(rng.choice(pool, size=k, replace=False))
    return np.sort(np.concatenate(picks))


FLOOR_METRICS = ("fid", "is", "kid", "precision", "recall")


def noise_floor(cfg: Config, train_images: str | Path, test_images: str | Path | None,
                classifier_path: str | Path | None, tokenizers: dict[str, str | Path] | None = None) -> dict:
    """The metric's own noise: real train-split images, drawn class-balanced like the samples,
    scored against the same reference as every run, ``evaluate.floor_draws`` times, at each sample
    count the runs use (``sample.num_samples``, ``sample.progress_samples``). The mean is the best
    a perfect generator could score at that count; the spread is what two equal generators differ by.

    With ``tokenizers`` ({kind: checkpoint}), also the tokenizer ceiling: the first draw at
    ``sample.num_samples``, encoded and decoded by each tokenizer and scored the same way, which is
    the best a perfect generator of that tokenizer's tokens could score."""
    from heptapod.data.images import ImageSet

    train = ImageSet(train_images)
    num_classes = int(train.attrs["num_classes"])
    real = reference_images(cfg, test_images)

    def draw(count: int, d: int) -> np.ndarray:
        rng = np.random.default_rng([cfg.sample.seed, count, d])
        return train.__getitems__(balanced_draw(train.labels, count, num_classes, rng))[0]

    def scores(images: np.ndarray) -> dict:
        return fidelity_metrics(images, real, cfg.evaluate, classifier_path, precision_recall=True)

    by_count = {}
    for count in sorted({cfg.sample.num_samples, cfg.sample.progress_samples}):
        draws = [scores(draw(count, d)) for d in range(cfg.evaluate.floor_draws)]
        line = {"draws": len(draws), "per_draw": [{m: x[m] for m in FLOOR_METRICS} for x in draws]}
        for m in FLOOR_METRICS:
            vals = np.array([x[m] for x in draws if x[m] is not None], dtype=np.float64)
            line[m] = float(vals.mean()) if len(vals) else None
            line[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else None
        by_count[count] = line
    tokenized = {}
    if tokenizers:
        device = resolve_device(cfg.workflow.device)
        images = draw(cfg.sample.num_samples, 0)
        for kind, path in tokenizers.items():
            recon, _ = reconstruct(load_tokenizer(path).to(device), images, cfg.evaluate.batch_size)
            m = scores(recon)
            tokenized[kind] = {"samples": len(images), **{k: m[k] for k in FLOOR_METRICS}}
    return {"by_count": by_count, "tokenized": tokenized, "extractor": draws[0]["extractor"], "source": "train split",
            "reference": "test split" if real is not None else str(cfg.evaluate.reference_stats)}


def evaluate_progress(cfg: Config, train_dir: str | Path, tokenizer_path: str | Path,
                      test_images: str | Path | None, classifier_path: str | Path | None) -> list[dict]:
    """FID / IS / KID of the EMA snapshots and the final model: metrics vs training progress."""
    from heptapod.sample import balanced_labels, generate
    from heptapod.train import load_generator

    device = resolve_device(cfg.workflow.device)
    train_dir = Path(train_dir)
    checkpoints = sorted((train_dir / "snapshots").glob("step-*.pt")) + [train_dir / "model.pt"]
    tokenizer = load_tokenizer(tokenizer_path).to(device)
    real = reference_images(cfg, test_images)
    sample_cfg = dataclasses.replace(cfg.sample, num_samples=cfg.sample.progress_samples)
    rows = []
    for path in checkpoints:
        model = load_generator(path, cfg.sample.use_ema).to(device)
        step = load_checkpoint(path, "generator")["steps"]
        labels = balanced_labels(sample_cfg.num_samples, model.spec.num_classes)
        images = generate(model, tokenizer, labels, sample_cfg)
        m = fidelity_metrics(images, real, cfg.evaluate, classifier_path)
        rows.append({"step": step, "sequences": step * cfg.train.batch_size, **m})
    return rows


def classifier_stage(cfg: Config, train_images: str | Path, test_images: str | Path, out: str | Path) -> dict:
    """Train the dataset classifier (the FID/IS feature extractor), or take the fixed one of
    classifier.checkpoint, and report its test accuracy."""
    from heptapod.evaluation.fidelity import pin_classifier, train_classifier

    test_x, test_y, attrs = load_images(test_images)
    if cfg.classifier.checkpoint:
        return pin_classifier(cfg.classifier.checkpoint, (test_x, test_y), attrs["num_classes"], out,
                              cfg.data.dataset, cfg.classifier.width)
    train_x, train_y, _ = load_images(train_images)
    return train_classifier(cfg.classifier, (train_x, train_y), (test_x, test_y), attrs["num_classes"], out,
                            resolve_device(cfg.workflow.device), cfg.data.dataset)


def likelihood_stage(cfg: Config, model_path: str | Path, test_latents: str | Path) -> dict:
    """Held-out NLL (or validation diffusion loss) of a run's sampling weights."""
    from heptapod.evaluation.likelihood import heldout_likelihood
    from heptapod.train import load_generator

    ev = cfg.evaluate
    model = load_generator(model_path, cfg.sample.use_ema).to(resolve_device(cfg.workflow.device))
    out = heldout_likelihood(model, test_latents, ev.nll_images, ev.nll_orders, ev.nll_batch_size)
    return {**out, "weights": "EMA" if cfg.sample.use_ema else "training"}


def reference_stats_stage(cfg: Config, images_path: str | Path, classifier_path: str | Path | None,
                          out: str | Path) -> dict:
    """FID statistics (mu, sigma) of an image store, written as an npz."""
    from heptapod.evaluation.fidelity import reference_statistics

    images, _, _ = load_images(images_path)
    stats = reference_statistics(images, cfg.evaluate, classifier_path)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mu=stats["mu"], sigma=stats["sigma"])
    return {"images": stats["images"], "extractor": stats["extractor"], "dim": len(stats["mu"])}
