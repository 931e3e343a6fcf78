import pytest
import torch
import torch.nn.functional as F

from heptapod.models.heptapod import Heptapod, ModelSpec
from heptapod.models.transformer import Transformer

HEADS = [("global", 16), ("local", 4), ("local", 16), ("1d", 16)]


def tiny(head="global", window=4, order="random", **kw) -> Heptapod:
    spec = dict(vocab_size=16, grid_size=4, num_classes=3, width=16, backbone_depth=2, head_depth=2,
                num_heads=2, mlp_ratio=2.0, head=head, order=order, window=window)
    spec.update(kw)
    torch.manual_seed(0)
    return Heptapod(ModelSpec(**spec)).eval()


def batch(model, b=3, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_pos = model.spec.num_positions
    tokens = torch.randint(0, model.spec.vocab_size, (b, n_pos), generator=g)
    labels = torch.randint(0, model.spec.num_classes, (b,), generator=g)
    order = model.orders(b, g)
    prefix = torch.rand(b, n_pos, generator=g).argsort(1)[:, :n]
    return tokens, labels, order, prefix


@pytest.mark.parametrize("head,window", HEADS)
def test_backbone_is_causal(head, window):
    m = tiny(head, window)
    tokens, labels, order, _ = batch(m)
    h1 = m.backbone(m.backbone_inputs(tokens, order, labels))
    t = 5
    changed = tokens.clone()
    changed[:, t:] = (changed[:, t:] + 1) % 16
    h2 = m.backbone(m.backbone_inputs(changed, order, labels))
    # h_i consumed tokens 1..i: states 0..t are unchanged, later ones do change
    assert torch.allclose(h1[:, :t + 1], h2[:, :t + 1], atol=1e-6)
    assert not torch.allclose(h1[:, t + 1:], h2[:, t + 1:])


def test_2d_input_carries_own_position_only():
    m = tiny("global")
    tokens, labels, order, _ = batch(m)
    x = m.backbone_inputs(tokens[:, :5], order, labels)
    assert m.next_pos_emb is None
    assert torch.allclose(x[:, 0], m.class_emb(labels))
    assert torch.allclose(x[:, 2], m.tok_emb(tokens[:, 1]) + m.pos_emb[order[:, 1]])


def test_1d_input_carries_the_next_position():
    m = tiny("1d")
    tokens, labels, order, _ = batch(m)
    x = m.backbone_inputs(tokens[:, :5], order, labels)
    assert torch.allclose(x[:, 0], m.class_emb(labels) + m.next_pos_emb[order[:, 0]])
    assert torch.allclose(x[:, 2], m.tok_emb(tokens[:, 1]) + m.pos_emb[order[:, 1]] + m.next_pos_emb[order[:, 2]])


@pytest.mark.parametrize("order", ["random", "raster"])
@pytest.mark.parametrize("head,window", HEADS)
def test_no_output_sees_a_token_not_yet_generated(head, window, order):
    m = tiny(head, window, order)
    tokens, labels, orders, prefix = batch(m, n=4)
    out1, target1, seen1 = m.head_outputs(tokens, labels, orders, prefix)
    rank = orders.argsort(1)
    for t in seen1.unique().tolist():
        changed = tokens.clone()
        hidden = rank >= t  # everything not generated after t steps
        changed[hidden] = (changed[hidden] + 3) % 16
        out2, target2, seen2 = m.head_outputs(changed, labels, orders, prefix)
        assert torch.equal(target1, target2) and torch.equal(seen1, seen2)
        sel = seen1 == t
        assert torch.allclose(out1[sel], out2[sel], atol=1e-5)


@pytest.mark.parametrize("head,window", HEADS)
def test_loss_covers_exactly_the_intended_positions(head, window):
    m = tiny(head, window)
    tokens, labels, order, prefix = batch(m, n=4)
    b, n_pos = tokens.shape
    out, target, seen = m.head_outputs(tokens, labels, order, prefix)
    rank = order.argsort(1)
    row, pos = target // n_pos, target % n_pos
    # every supervised position is one not generated yet at its prefix
    assert torch.all(rank[row, pos] >= seen)
    expected = set()
    for bi in range(b):
        if head == "1d":
            expected |= {(bi, t, int(order[bi, t])) for t in range(n_pos)}
            continue
        for t in prefix[bi].tolist():
            if head == "global":
                cands = range(n_pos)
            else:  # the tile (side sqrt(w)) holding the next position
                side, nxt = int(window ** 0.5), int(order[bi, t])
                r0, c0 = (nxt // 4) // side * side, (nxt % 4) // side * side
                cands = [r * 4 + c for r in range(r0, r0 + side) for c in range(c0, c0 + side)]
            expected |= {(bi, t, p) for p in cands if rank[bi, p] >= t}
    got = {(int(r), int(s), int(p)) for r, s, p in zip(row, seen, pos)}
    assert got == expected and len(got) == len(target)
    loss, info = m.loss(tokens, labels, order, prefix)
    assert info["supervised_slots"] == len(expected) == m.supervised_count(order, prefix)
    assert torch.allclose(loss, F.cross_entropy(m.out.logits(out), tokens.flatten()[target]), atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_head_shapes_at_several_densities(n):
    for head, window in HEADS:
        m = tiny(head, window)
        tokens, labels, order, prefix = batch(m, n=n)
        out, target, seen = m.head_outputs(tokens, labels, order, prefix)
        assert out.shape == (len(target), 16) and seen.shape == target.shape


def test_kv_cache_equals_full_recomputation():
    m = tiny()
    tokens, labels, order, _ = batch(m)
    x = m.backbone_inputs(tokens, order, labels)
    full = m.backbone(x)
    cache = m.backbone.new_cache(x.shape[0], x.shape[1], x)
    steps = [m.backbone(x[:, i:i + 1], cache) for i in range(x.shape[1])]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("head,window", HEADS)
def test_sampling_with_and_without_cache_agree(head, window):
    m = tiny(head, window)
    labels = torch.tensor([0, 1, 2, 1])
    a = m.sample(labels, generator=torch.Generator().manual_seed(1), use_cache=True)
    b = m.sample(labels, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert a.shape == (4, 16) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() < 16


@pytest.mark.parametrize("head,window", HEADS)
def test_sampling_step_equals_training_output(head, window):
    """The head output used to sample a position equals the training-time output at that prefix."""
    m = tiny(head, window, order="raster")
    labels = torch.tensor([1])
    timer = {}
    tokens = m.sample(labels, temperature=1e-4, generator=torch.Generator().manual_seed(0), timer=timer)
    n_pos = tokens.shape[1]
    order = m.orders(1)
    prefix = torch.arange(n_pos)[None]
    out, target, seen = m.head_outputs(tokens, labels, order, prefix)
    next_slot = target % n_pos == order[0, seen]
    greedy = m.out.logits(out[next_slot]).argmax(-1)
    assert torch.equal(greedy, tokens[0, order[0]])  # near-zero temperature = argmax
    assert timer["head"] > 0 and timer["backbone"] > 0


def test_last_layer_rows_equal_full_computation():
    t = Transformer(16, 2, 2, 2.0, causal=False).eval()
    x = torch.randn(3, 7, 16)
    rows = torch.tensor([[0], [4], [6]])
    assert torch.allclose(t(x, rows=rows)[:, 0], t(x)[torch.arange(3), rows[:, 0]], atol=1e-5)


def test_random_orders_are_permutations():
    m = tiny()
    order = m.orders(5, torch.Generator().manual_seed(0))
    assert torch.equal(order.sort(1).values, torch.arange(16).expand(5, 16))
    assert not torch.equal(order[0], order[1])


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="model.head"):
        tiny(head="mystery")
    with pytest.raises(ValueError, match="model.window"):
        tiny(head="local", window=8)


def test_1d_model_is_size_matched():
    """Head layers become causal layers: parameter counts differ only by the head extras."""
    one_d, two_d = tiny("1d"), tiny("global")
    assert len(one_d.backbone.blocks) == 4 and len(two_d.backbone.blocks) == 2
    assert abs(one_d.num_params() - two_d.num_params()) / two_d.num_params() < 0.1


def test_continuous_tokens_no_leakage_and_cached_sampling():
    m = tiny("global", tokens="continuous", token_dim=3, diffloss_width=16, diffloss_depth=1)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 16, 3, generator=g)
    labels = torch.tensor([0, 2])
    order = m.orders(2, g)
    prefix = torch.tensor([[3, 9], [0, 15]])
    out1, target, seen = m.head_outputs(tokens, labels, order, prefix)
    rank = order.argsort(1)
    changed = tokens.clone()
    changed[rank >= 3] += 1.0
    out2, _, _ = m.head_outputs(changed, labels, order, prefix)
    sel = seen <= 3
    assert torch.allclose(out1[sel], out2[sel], atol=1e-5)
    loss, info = m.loss(tokens, labels, order, prefix, torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and info["supervised_slots"] == (16 - 3) + (16 - 9) + 16 + 1
    m.out.sample_steps = 5
    a = m.sample(labels, generator=torch.Generator().manual_seed(2), use_cache=True)
    b = m.sample(labels, generator=torch.Generator().manual_seed(2), use_cache=False)
    assert a.shape == (2, 16, 3) and torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("head,window,tokens,k", [("global", 16, "discrete", 1), ("global", 16, "discrete", 4),
                                                   ("local", 4, "discrete", 2), ("1d", 16, "discrete", 1),
                                                   ("global", 16, "continuous", 1), ("global", 16, "continuous", 4)])
def test_sampling_runs_under_bf16_autocast(head, window, tokens, k):
    """On a GPU the bench samples in bf16 autocast: the head and backbone outputs come in bf16
    while the sampler's buffers keep the model's dtype (found on an H200; CPU autocast is the same)."""
    extra = dict(tokens="continuous", token_dim=3, diffloss_width=16, diffloss_depth=1) if tokens == "continuous" else {}
    m = tiny(head, window, **extra)
    m.out.sample_steps = 5
    labels = torch.tensor([0, 1, 2])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.sample(labels, generator=torch.Generator().manual_seed(0), positions_per_step=k)
    assert out.shape[:2] == (3, 16) and out.dtype == (torch.float32 if tokens == "continuous" else torch.long)
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("head,window,tokens", [("global", 16, "discrete"), ("local", 4, "discrete"),
                                                ("1d", 16, "discrete"), ("global", 16, "continuous")])
def test_training_and_held_out_scores_run_under_bf16_autocast(head, window, tokens):
    """The GPU path trains in bf16 autocast and scores held-out data after it: the loss
    backpropagates to every parameter and the scores come out finite (CPU autocast, same casts)."""
    extra = dict(tokens="continuous", token_dim=3, diffloss_width=16, diffloss_depth=1) if tokens == "continuous" else {}
    m = tiny(head, window, **extra).train()
    seq, labels, order, prefix = batch(m)
    if extra:
        seq = torch.randn(len(seq), 16, 3, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m.loss(seq, labels, order, prefix, torch.Generator().manual_seed(1))[0]
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in m.parameters() if p.requires_grad)
    m.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        score = (m.diffusion_loss(seq, labels, order, torch.Generator().manual_seed(2)) if extra
                 else m.nll(seq, labels, order))
    assert torch.isfinite(score.float()).all()


def test_discrete_draws_are_torch_multinomials_from_the_same_generator():
    """The sampler draws a token as argmax(p / Exp(1)) with the exponentials from the CPU generator,
    so that a GPU need not wait for its probabilities: on the CPU this must be exactly
    torch.multinomial's draw (the committed reports' samples), leaving the generator where it leaves it."""
    from heptapod.models.outputs import DiscreteOutput

    out = DiscreteOutput(8, 50)
    z = torch.randn(400, 8, generator=torch.Generator().manual_seed(0))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    with torch.no_grad():
        ours = out.sample(z, 0.7, g1)
        probs = (out.logits(z) / 0.7).softmax(dim=-1)
    assert torch.equal(ours, torch.multinomial(probs, 1, generator=g2)[:, 0])
    assert torch.equal(g1.get_state(), g2.get_state())
    # and the draws follow the distribution: one row drawn many times
    with torch.no_grad():
        many = out.sample(z[:1].expand(20000, 8), 1.0, torch.Generator().manual_seed(4))
    freq = torch.bincount(many, minlength=50).double() / len(many)
    assert (freq - out.logits(z[:1]).softmax(-1)[0].double()).abs().max() < 0.015
