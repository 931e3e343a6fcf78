"""Linear probe: how linearly separable the classes are in the frozen backbone's states.

Features are the backbone's last-layer states (layer ``backbone_depth``; label-free, see
``trace``) of each image with all its tokens consumed, in the model's own kind of order:
mean-pooled over the N token steps, and the last step's state alone. A multinomial logistic
regression (standardised features, L2, full-batch L-BFGS) is fit on train-split images and
scored on the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from heptapod.analysis.trace import heldout_batches, trace
from heptapod.models.heptapod import Heptapod

L2 = 1e-4  # on the weights of standardised features; small: the probe should not need it


@torch.no_grad()
def features(model: Heptapod, latents: str | Path, images: int, batch_size: int,
             seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """{'mean': (M, D), 'last': (M, D)} features of the first ``images`` rows, and labels (M,)."""
    gen = torch.Generator().manual_seed(seed)
    mean, last, labels = [], [], []
    for tokens, y in heldout_batches(latents, images, batch_size):
        tr = trace(model, tokens, model.orders(len(tokens), gen), attention=False)
        states = tr.states[tr.backbone_depth - 1][:, 1:].double()
        mean.append(states.mean(1))
        last.append(states[:, -1])
        labels.append(y)
    if not labels:
        raise ValueError(f"{latents}: no rows to probe")
    return {"mean": torch.cat(mean), "last": torch.cat(last)}, torch.cat(labels)


def fit_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
              num_classes: int, steps: int) -> dict:
    """Test accuracy of a logistic regression fit on (train_x, train_y), and its train accuracy."""
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-8)
    xa, xb = (train_x - mu) / sd, (test_x - mu) / sd
    w = torch.zeros(xa.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xa @ w + b, train_y) + L2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        acc = lambda x, y: float(((x @ w + b).argmax(1) == y).double().mean())  # noqa: E731
        test = acc(xb, test_y)
        return {"test_accuracy": test, "train_accuracy": acc(xa, train_y),
                "test_accuracy_se": float(np.sqrt(test * (1 - test) / len(test_y)))}


def linear_probe(model: Heptapod, train_latents: str | Path, test_latents: str | Path, train_images: int,
                 test_images: int, batch_size: int, steps: int) -> dict:
    """Probe accuracy of the mean-pooled and the last state, with what was probed."""
    train_f, train_y = features(model, train_latents, train_images, batch_size, seed=1)
    test_f, test_y = features(model, test_latents, test_images, batch_size, seed=2)
    classes = int(max(train_y.max(), test_y.max())) + 1
    return {"mean": fit_probe(train_f["mean"], train_y, test_f["mean"], test_y, classes, steps),
            "last": fit_probe(train_f["last"], train_y, test_f["last"], test_y, classes, steps),
            "train_images": len(train_y), "test_images": len(test_y), "layer": model.spec.backbone_depth}
