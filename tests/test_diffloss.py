import torch

from heptapod.models.diffloss import DiffLoss, cosine_alphas_cumprod


def test_cosine_schedule_is_decreasing_from_one_to_zero():
    ab = cosine_alphas_cumprod(1000)
    assert ab[0] > 0.99 and ab[-1] < 1e-3 and torch.all(ab[1:] < ab[:-1])


def test_learns_and_samples_a_conditional_2d_distribution():
    """Two conditions, two Gaussians in 2D: training lowers the loss, sampling recovers them."""
    torch.manual_seed(0)
    means = torch.tensor([[2.0, -1.0], [-1.5, 1.5]])
    stds = torch.tensor([[0.3, 0.6], [0.5, 0.2]])
    conds = torch.eye(2) * 3
    dl = DiffLoss(token_dim=2, cond_dim=2, width=64, depth=2, sample_steps=50, batch_mul=4)
    opt = torch.optim.Adam(dl.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(600):
        k = torch.randint(0, 2, (128,), generator=g)
        x0 = means[k] + stds[k] * torch.randn(128, 2, generator=g)
        loss = dl.loss(conds[k], x0, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-100:]) / 100 < 0.5 * sum(losses[:20]) / 20
    for c in range(2):
        x = dl.sample(conds[c].expand(1000, 2), temperature=1.0, generator=g)
        assert torch.allclose(x.mean(0), means[c], atol=0.15), (c, x.mean(0))
        assert torch.allclose(x.std(0), stds[c], atol=0.12), (c, x.std(0))
    # temperature < 1 narrows the samples
    cold = dl.sample(conds[0].expand(1000, 2), temperature=0.3, generator=g)
    assert cold.std(0).mean() < 0.8 * stds[0].mean()
