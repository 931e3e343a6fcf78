"""Several positions per sampling step from the global 2D head (k per step, or a cosine schedule)."""

import pytest
import torch

from heptapod.models.heptapod import Heptapod, ModelSpec, fill_schedule


def tiny(head="global", tokens="discrete", grid=4) -> Heptapod:
    torch.manual_seed(0)
    spec = ModelSpec(vocab_size=16, grid_size=grid, num_classes=3, width=16, backbone_depth=2, head_depth=2,
                     num_heads=2, mlp_ratio=2.0, head=head, order="random", window=4, tokens=tokens,
                     token_dim=3 if tokens == "continuous" else 1, diffloss_width=16, diffloss_depth=1,
                     diffloss_sample_steps=5)
    return Heptapod(spec).double().eval()


@pytest.mark.parametrize("chunk", [2, 4, 8])
def test_chunked_kv_cache_equals_recomputation(chunk):
    """A chunk of tokens through the cache: all of the past, causal inside the chunk."""
    m = tiny()
    x = torch.randn(3, 17, 16, dtype=torch.double)
    full = m.backbone(x)
    cache = m.backbone.new_cache(3, 17, x)
    parts = [m.backbone(x[:, :1], cache)] + [m.backbone(x[:, i:i + chunk], cache) for i in range(1, 17, chunk)]
    torch.testing.assert_close(torch.cat(parts, 1), full)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_k_per_step_with_and_without_cache_agree(k):
    m = tiny()
    labels = torch.tensor([0, 1, 2, 1])
    a = m.sample(labels, generator=torch.Generator().manual_seed(1), positions_per_step=k)
    b = m.sample(labels, generator=torch.Generator().manual_seed(1), positions_per_step=k, use_cache=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("head", ["global", "local"])
@pytest.mark.parametrize("k,steps", [(3, None), (16, None), (1, 5)])
def test_every_position_is_filled_exactly_once(head, k, steps):
    """Tokens drawn from a vocabulary without 0 (huge bias): any unfilled slot would stay 0, and
    each step's head call sees exactly the positions filled so far."""
    m = tiny(head)
    with torch.no_grad():
        m.out.linear.bias[0] = -1e9
    calls = []
    step = m.head.step
    m.head.step = lambda ctx, pos: (calls.append((int(ctx.visible.sum(1)[0]), pos.reshape(len(pos), -1).shape[1])),
                                    step(ctx, pos))[1]
    tokens = m.sample(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(2), positions_per_step=k, steps=steps)
    assert (tokens > 0).all()
    sizes = fill_schedule(16, k, steps)
    assert [c[1] for c in calls] == sizes and [c[0] for c in calls] == [sum(sizes[:i]) for i in range(len(sizes))]


def test_one_position_per_step_is_the_default():
    m = tiny()
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(m.sample(labels, generator=torch.Generator().manual_seed(3)),
                               m.sample(labels, generator=torch.Generator().manual_seed(3), positions_per_step=1))


def test_continuous_tokens_k_per_step():
    m = tiny(tokens="continuous")
    out = m.sample(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), positions_per_step=4)
    assert out.shape == (2, 16, 3) and torch.isfinite(out).all() and (out.abs().sum(-1) > 0).all()


def test_fill_schedule():
    assert fill_schedule(10, 4) == [4, 4, 2]
    cosine = fill_schedule(64, steps=8)
    assert sum(cosine) == 64 and len(cosine) == 8 and min(cosine) >= 1
    assert cosine[0] < cosine[-1]  # few positions early, many late (MaskGIT/MAR)
    assert fill_schedule(4, steps=4) == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="sample.steps"):
        fill_schedule(4, steps=5)
    with pytest.raises(ValueError, match="positions_per_step"):
        fill_schedule(4, 0)


def test_1d_baselines_refuse_several_positions_per_step():
    with pytest.raises(ValueError, match="1D baselines"):
        tiny("1d").sample(torch.tensor([0]), positions_per_step=2)


@pytest.mark.parametrize("k", [1, 2, 4])
@torch.no_grad()
def test_local_head_step_reads_each_positions_own_tile(k):
    """k positions at once from the local head = each position's tile run alone on the same prefix."""
    from heptapod.models.heads import SamplingContext

    m = tiny("local")
    g = torch.Generator().manual_seed(5)
    ctx = SamplingContext(torch.randn(2, 16, 16, dtype=torch.double, generator=g), torch.zeros(2, 16, 16, dtype=torch.double),
                          torch.zeros(2, 16, dtype=torch.bool), t=5)
    pos = torch.stack([torch.randperm(16, generator=g)[:k] for _ in range(2)])
    together = m.head.step(ctx, pos)
    alone = torch.stack([m.head.step(ctx, pos[:, i]) for i in range(k)], dim=1)
    torch.testing.assert_close(together, alone)


@pytest.mark.parametrize("k", [2, 4])
def test_local_head_k_per_step_fills_everything_with_and_without_cache(k):
    m = tiny("local")
    labels = torch.tensor([0, 2])
    a = m.sample(labels, generator=torch.Generator().manual_seed(1), positions_per_step=k)
    b = m.sample(labels, generator=torch.Generator().manual_seed(1), positions_per_step=k, use_cache=False)
    assert torch.equal(a, b) and a.shape == (2, 16)
