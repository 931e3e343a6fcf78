import torch

from heptapod.tokenizers.vq import KLTokenizer, TokenizerSpec, VQTokenizer


def spec(kind, **kw):
    base = dict(kind=kind, channels=1, codebook_size=32, code_dim=4, downsample=4, width=8)
    base.update(kw)
    return TokenizerSpec(**base)


def toy_images():
    x = -torch.ones(8, 1, 8, 8)
    x[:, :, 2:6, 2:6] = 1.0
    x[4:, :, :, :4] *= -1
    return x


def test_vq_encode_decode_shapes_and_codebook_use():
    torch.manual_seed(0)
    tok = VQTokenizer(spec("vq"))
    x = torch.rand(16, 1, 32, 32) * 2 - 1
    tok.init_codebook(x, torch.Generator().manual_seed(0))
    codes = tok.encode(x)
    assert codes.shape == (16, 8, 8) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < 32
    assert tok.decode(codes).shape == (16, 1, 32, 32)
    # data-dependent init: many codes in use from the start
    assert codes.unique().numel() >= 16


def test_kl_moments_shapes_and_scale():
    torch.manual_seed(0)
    tok = KLTokenizer(spec("kl"))
    x = torch.rand(16, 1, 32, 32) * 2 - 1
    assert tok.moments(x).shape == (16, 8, 8, 8)  # mean and log-variance of 4 channels
    tok.calibrate(x)
    z = tok.encode(x)
    assert z.shape == (16, 4, 8, 8) and abs(float(z.std()) - 1.0) < 1e-3
    assert tok.decode(z).shape == (16, 1, 32, 32)


def _train(tok, weight):
    x = toy_images()
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        _, loss, stats = tok(x, weight)
        first = first if first is not None else stats["rec_mse"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, stats["rec_mse"]


def test_training_reduces_reconstruction_error():
    torch.manual_seed(0)
    vq = VQTokenizer(spec("vq", downsample=2))
    vq.init_codebook(toy_images(), torch.Generator().manual_seed(0))
    first, last = _train(vq, 0.25)
    assert last < 0.5 * first
    first, last = _train(KLTokenizer(spec("kl", downsample=2)), 1e-6)
    assert last < 0.5 * first
