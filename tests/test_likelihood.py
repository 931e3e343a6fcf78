"""Held-out likelihood: an exact, normalised NLL for every head, read where sampling reads."""

import itertools
import math
from contextlib import closing

import numpy as np
import pytest
import torch

from heptapod.evaluation.likelihood import BY_STEP_KEY, QUARTERS_KEY, heldout_likelihood, heldout_scores, summarize
from heptapod.data.store import LatentStore
from heptapod.models.heads import GlobalHead, SamplingContext
from heptapod.models.heptapod import Heptapod, ModelSpec
from conftest import make_latent_store

HEADS = [("global", 4), ("local", 4), ("1d", 4)]


def tiny(head: str, window: int, order: str = "random", grid: int = 2, vocab: int = 3) -> Heptapod:
    torch.manual_seed(0)
    spec = ModelSpec(vocab_size=vocab, grid_size=grid, num_classes=2, width=16, backbone_depth=1,
                     head_depth=1, num_heads=2, mlp_ratio=2.0, head=head, order=order, window=window)
    model = Heptapod(spec).double().eval()
    with torch.no_grad():  # away from the near-uniform initial output, so that errors show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


@pytest.mark.parametrize("head,window", HEADS)
def test_nll_is_a_normalised_distribution_over_all_grids(head, window):
    """exp(-NLL) summed over every token grid is 1 for any fixed order: a proper likelihood."""
    model = tiny(head, window)
    grids = torch.tensor(list(itertools.product(range(3), repeat=4)))  # all 81 grids of N = 4
    labels = torch.zeros(len(grids), dtype=torch.long)
    order = model.orders(1, torch.Generator().manual_seed(1)).expand(len(grids), -1)
    nll = model.nll(grids, labels, order).sum(1)
    assert torch.exp(-nll).sum().item() == pytest.approx(1.0, abs=1e-9)


def teacher_forced_nll(model: Heptapod, tokens, labels, order) -> torch.Tensor:
    """The sampler's own loop (KV cache, one head step per position), fed the given tokens."""
    b, n_pos, d = len(tokens), model.spec.num_positions, model.spec.width
    ar = torch.arange(b)
    ctx = SamplingContext(torch.zeros(b, n_pos, d, dtype=torch.double),
                          torch.zeros(b, n_pos, d, dtype=torch.double), torch.zeros(b, n_pos, dtype=torch.bool))
    x0 = model.backbone_inputs(tokens[:, :0], order, labels)
    cache = model.backbone.new_cache(b, n_pos, x0)
    ctx.states_by_step[:, 0] = model.to_head(model.backbone(x0, cache)[:, 0])
    out = torch.zeros(b, n_pos, dtype=torch.double)
    for t in range(n_pos):
        pos = order[:, t]
        logp = model.out.logits(model.head.step(ctx, pos)).double().log_softmax(-1)
        tok = tokens[ar, pos]
        out[:, t] = -logp[ar, tok]
        if t == n_pos - 1:
            break
        x = model.tok_emb(tok) + model.pos_emb[pos]
        if model.next_pos_emb is not None:
            x = x + model.next_pos_emb[order[:, t + 1]]
        h = model.to_head(model.backbone(x[:, None], cache)[:, -1])
        ctx.states_by_step[:, t + 1] = h
        ctx.states_by_pos[ar, pos] = h
        ctx.visible[ar, pos] = True
        ctx.t = t + 1
    return out


@pytest.mark.parametrize("head,window", [("global", 4), ("local", 4), ("local", 16), ("1d", 16)])
@torch.no_grad()
def test_nll_reads_the_output_the_sampler_uses(head, window):
    model = tiny(head, window, grid=4, vocab=7)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 7, (3, 16), generator=g)
    labels = torch.tensor([0, 1, 1])
    order = model.orders(3, g)
    torch.testing.assert_close(model.nll(tokens, labels, order), teacher_forced_nll(model, tokens, labels, order))


@torch.no_grad()
def test_global_fast_path_equals_the_training_outputs():
    """The global head's next-slot-only path gives the same outputs as the training path."""
    model = tiny("global", 16, grid=4, vocab=7)
    assert isinstance(model.head, GlobalHead)
    g = torch.Generator().manual_seed(4)
    tokens, labels, order = torch.randint(0, 7, (2, 16), generator=g), torch.tensor([0, 1]), model.orders(2, g)
    fast, target = model.next_position_outputs(tokens, labels, order)
    prefix = torch.arange(16).expand(2, 16)
    out, tgt, seen = model.head_outputs(tokens, labels, order, prefix)
    row = tgt // 16
    keep = tgt % 16 == order[row, seen]
    by_step = (row[keep] * 16 + seen[keep]).argsort()
    torch.testing.assert_close(fast, out[keep][by_step])
    assert torch.equal(target, tgt[keep][by_step])


def test_heldout_scores_and_summary(tmp_path):
    store_path = make_latent_store(tmp_path / "test.h5", n=40, grid=2, vocab=3, classes=2)
    random_model, raster_model = tiny("global", 4), tiny("1d", 4, order="raster")
    res = heldout_likelihood(random_model, store_path, images=24, orders=3, batch_size=5)
    assert res["heldout_images"] == 24 and res["heldout_orders"] == 3
    assert len(res["nll_bits_per_token_by_order"]) == 3
    assert res["nll_bits_per_token_order_sd"] > 0  # a random-order model depends on the order
    assert 0 < res["nll_bits_per_token"] < 10 and res["nll_bits_per_token_se"] > 0
    per_image = res["nll_bits_per_token_per_image"]  # kept for paired comparisons between runs
    assert len(per_image) == 24 and np.mean(per_image) == pytest.approx(res["nll_bits_per_token"], abs=1e-6)
    # the score does not depend on the batch size, and raster models have a single order
    again = heldout_likelihood(random_model, store_path, images=24, orders=3, batch_size=24)
    assert again["nll_bits_per_token"] == pytest.approx(res["nll_bits_per_token"], rel=1e-9)
    assert heldout_likelihood(raster_model, store_path, 24, 3, 8)["heldout_orders"] == 1


@pytest.mark.parametrize("head,order", [("1d", "raster"), ("1d", "random"), ("global", "random")])
def test_heldout_nll_is_split_by_generation_step(tmp_path, head, order):
    """Each image's NLL by generation step (mean over its orders) averages to its score, for every
    head and order; step t of one order is the model's NLL of the token it generates at step t;
    the written curve and per-image quarters are the same numbers, summarised."""
    store_path = make_latent_store(tmp_path / "test.h5", grid=4, vocab=16, classes=2)
    m = tiny(head, 4, order=order, grid=4, vocab=16)
    with closing(LatentStore(store_path)) as store:
        scores, per_step = heldout_scores(m, store, 10, 3, 4)
        assert per_step.shape == (10, 16) and (per_step > 0).all()
        np.testing.assert_allclose(per_step.mean(axis=1), scores.mean(axis=1), rtol=1e-10)
        if order == "raster":  # one order: step t is the nll of the t-th raster token
            codes, labels = store.rows(0, 10)
            direct = m.nll(store.tokens(codes[:, 0]), labels, m.orders(10)) / math.log(2)
            np.testing.assert_allclose(per_step, direct.numpy(), rtol=1e-10)
    res = heldout_likelihood(m, store_path, images=10, orders=3, batch_size=4)
    np.testing.assert_allclose(res[BY_STEP_KEY], per_step.mean(axis=0), rtol=1e-10)
    quarters = np.array(res[QUARTERS_KEY])
    assert quarters.shape == (10, 4)
    np.testing.assert_allclose(quarters, per_step.reshape(10, 4, 4).mean(axis=2), atol=1e-6)
    np.testing.assert_allclose(quarters.mean(axis=1), res["nll_bits_per_token_per_image"], atol=2e-6)


def test_summary_statistics():
    scores = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    s = summarize(scores, continuous=False)
    assert s["nll_bits_per_token"] == 2.0
    assert s["nll_bits_per_token_se"] == 0.0  # every image's order mean is 2
    assert s["nll_bits_per_token_order_sd"] == pytest.approx(math.sqrt((2 + 0 + 2) / 3))
    assert summarize(scores[:, :1], continuous=True)["val_diffusion_loss_order_sd"] is None


def test_continuous_models_get_a_diffusion_loss_not_a_likelihood():
    torch.manual_seed(0)
    spec = ModelSpec(vocab_size=0, grid_size=2, num_classes=2, width=16, backbone_depth=1, head_depth=1,
                     num_heads=2, mlp_ratio=2.0, head="global", order="random", window=4,
                     tokens="continuous", token_dim=3, diffloss_width=16, diffloss_depth=1)
    model = Heptapod(spec).eval()
    tokens = torch.randn(2, 4, 3)
    loss = model.diffusion_loss(tokens, torch.tensor([0, 1]), model.orders(2), torch.Generator().manual_seed(0))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    with pytest.raises(ValueError, match="continuous"):
        model.nll(tokens, torch.tensor([0, 1]), model.orders(2))
    with pytest.raises(ValueError):
        heldout_scores(model, type("S", (), {"num_rows": 0, "path": "x.h5"})(), 0, 1, 1)
