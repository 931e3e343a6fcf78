import torch

from heptapod.tokenizers.vq import VQSpec, VQTokenizer


def test_encode_decode_shapes_and_codebook_use():
    torch.manual_seed(0)
    tok = VQTokenizer(VQSpec(channels=1, codebook_size=32, code_dim=4, downsample=4, width=8))
    x = torch.rand(16, 1, 32, 32) * 2 - 1
    tok.init_codebook(x, torch.Generator().manual_seed(0))
    codes = tok.encode(x)
    assert codes.shape == (16, 8, 8) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < 32
    assert tok.decode(codes).shape == (16, 1, 32, 32)
    # data-dependent init: many codes in use from the start
    assert codes.unique().numel() >= 16


def test_training_reduces_reconstruction_error():
    torch.manual_seed(0)
    tok = VQTokenizer(VQSpec(channels=1, codebook_size=32, code_dim=4, downsample=2, width=8))
    x = torch.zeros(8, 1, 8, 8)
    x[:, :, 2:6, 2:6] = 1.0
    x[4:, :, :, :4] *= -1
    tok.init_codebook(x, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        _, loss, stats = tok(x, 0.25)
        first = first if first is not None else stats["rec_mse"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert stats["rec_mse"] < 0.5 * first
