import pytest
import torch
import torch.nn.functional as F

from heptapod.models.heptapod import Heptapod, ModelSpec
from heptapod.models.transformer import Transformer


def tiny(order="random", **kw) -> Heptapod:
    spec = dict(vocab_size=16, grid_size=3, num_classes=3, width=16, backbone_depth=2, head_depth=2,
                num_heads=2, mlp_ratio=2.0, head="global", order=order)
    spec.update(kw)
    torch.manual_seed(0)
    return Heptapod(ModelSpec(**spec)).eval()


def batch(model, b=4, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_pos = model.spec.num_positions
    tokens = torch.randint(0, model.spec.vocab_size, (b, n_pos), generator=g)
    labels = torch.randint(0, model.spec.num_classes, (b,), generator=g)
    order = model.orders(b, g)
    prefix = torch.rand(b, n_pos, generator=g).argsort(1)[:, :n]
    return tokens, labels, order, prefix


def test_backbone_is_causal():
    m = tiny()
    tokens, labels, order, _ = batch(m)
    h1 = m.backbone(m.backbone_inputs(tokens, order, labels))
    t = 4
    changed = tokens.clone()
    changed[:, t:] = (changed[:, t:] + 1) % 16
    h2 = m.backbone(m.backbone_inputs(changed, order, labels))
    # h_i consumed tokens 1..i: states 0..t are unchanged, later ones do change
    assert torch.allclose(h1[:, :t + 1], h2[:, :t + 1], atol=1e-6)
    assert not torch.allclose(h1[:, t + 1:], h2[:, t + 1:])


def test_backbone_input_carries_own_position():
    m = tiny()
    tokens, labels, order, _ = batch(m)
    x = m.backbone_inputs(tokens, order, labels)
    expected = m.tok_emb(tokens[:, 0]) + m.pos_emb[order[:, 0]]
    assert torch.allclose(x[:, 1], expected)


@pytest.mark.parametrize("order", ["random", "raster"])
def test_masked_slots_never_see_their_tokens(order):
    m = tiny(order)
    tokens, labels, orders, prefix = batch(m, n=3)
    out1, masked = m.head_outputs(tokens, labels, orders, prefix)
    # change every token that is masked (not yet generated) in each prefix's view
    for j in range(prefix.shape[1]):
        changed = tokens.clone()
        rank = orders.argsort(1)
        hidden = rank >= prefix[:, j:j + 1]
        changed[hidden] = (changed[hidden] + 3) % 16
        out2, masked2 = m.head_outputs(changed, labels, orders, prefix[:, j:j + 1])
        rows = torch.arange(tokens.shape[0]) * prefix.shape[1] + j
        assert torch.equal(masked2, masked[rows])
        assert torch.allclose(out1[rows], out2, atol=1e-5)


def test_loss_covers_exactly_the_masked_slots():
    m = tiny()
    tokens, labels, order, prefix = batch(m, n=3)
    loss, info = m.loss(tokens, labels, order, prefix)
    n_pos = m.spec.num_positions
    assert info["masked_slots"] == int((n_pos - prefix).sum())
    out, masked = m.head_outputs(tokens, labels, order, prefix)
    targets = tokens.repeat_interleave(prefix.shape[1], 0)
    per_slot = F.cross_entropy(m.out(out).flatten(0, 1), targets.flatten(), reduction="none")
    assert torch.allclose(loss, per_slot[masked.flatten()].mean(), atol=1e-6)
    # a visible slot's prediction has no gradient path into the loss
    out.retain_grad()
    l2 = F.cross_entropy(m.out(out[masked]), targets[masked])
    l2.backward()
    assert torch.all(out.grad[~masked] == 0) and out.grad[masked].abs().sum() > 0


def test_kv_cache_equals_full_recomputation():
    m = tiny()
    tokens, labels, order, _ = batch(m)
    full = m.backbone(m.backbone_inputs(tokens, order, labels))
    x = m.backbone_inputs(tokens, order, labels)
    cache = m.backbone.new_cache(x.shape[0], x.shape[1], x)
    steps = [m.backbone(x[:, i:i + 1], cache) for i in range(x.shape[1])]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_sampling_with_and_without_cache_agree():
    m = tiny()
    labels = torch.tensor([0, 1, 2, 1])
    a = m.sample(labels, generator=torch.Generator().manual_seed(1), use_cache=True)
    b = m.sample(labels, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert a.shape == (4, 9) and torch.equal(a, b)


def test_last_layer_rows_equal_full_computation():
    t = Transformer(16, 2, 2, 2.0, causal=False).eval()
    x = torch.randn(3, 7, 16)
    rows = torch.tensor([[0], [4], [6]])
    full = t(x)
    part = t(x, rows=rows)
    assert torch.allclose(part[:, 0], full[torch.arange(3), rows[:, 0]], atol=1e-5)


def test_sampling_fills_every_position_in_order():
    m = tiny("raster")
    g = torch.Generator().manual_seed(0)
    tokens = m.sample(torch.tensor([0, 1]), temperature=1e-3, generator=g)
    assert tokens.min() >= 0 and tokens.max() < m.spec.vocab_size


def test_random_orders_are_permutations():
    m = tiny()
    order = m.orders(5, torch.Generator().manual_seed(0))
    assert torch.equal(order.sort(1).values, torch.arange(9).expand(5, 9))
    assert not torch.equal(order[0], order[1])


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="model.head"):
        tiny(head="local")
