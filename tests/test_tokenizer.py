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


def test_a_trained_tokenizer_file_is_pinned_byte_for_byte_when_it_fits_the_preset(params, tmp_path):
    """tokenizer.vq/kl_checkpoint naming the pipeline's own tokenizer.pt: used as is (its codes are
    what every generator models), but only where it fits the preset's settings and data set."""
    import dataclasses

    import pytest

    from heptapod.config import resolve
    from heptapod.tokenizers.stage import load_tokenizer, use_checkpoint
    from heptapod.tokenizers.vq import build_tokenizer
    from heptapod.utils.io import CheckpointError, file_sha256, save_checkpoint

    cfg = resolve(params, "smoke")
    tc = cfg.tokenizer
    for kind in ("vq", "kl"):
        model = build_tokenizer(TokenizerSpec.from_config(tc, cfg.data.channels, kind))
        path = tmp_path / f"{kind}.pt"
        save_checkpoint(path, {"kind": "tokenizer", "spec": model.spec_dict(), "dataset": cfg.data.dataset,
                               "state_dict": model.state_dict()})
        out = use_checkpoint(cfg, kind, path, tmp_path / f"{kind}-pinned.pt")
        assert (tmp_path / f"{kind}-pinned.pt").read_bytes() == path.read_bytes()
        assert out == {"pinned": kind, "checkpoint": str(path), "checkpoint_sha256": file_sha256(path)}
        assert load_tokenizer(tmp_path / f"{kind}-pinned.pt").spec == model.spec
    wider = dataclasses.replace(cfg, tokenizer=dataclasses.replace(tc, width=tc.width * 2, codebook_size=7))
    with pytest.raises(ValueError, match=r"vq\.pt does not fit this preset's tokenizer settings: "
                                         rf"codebook_size is {tc.codebook_size} in the file, 7 here, "
                                         rf"width is {tc.width} in the file, {tc.width * 2} here"):
        use_checkpoint(wider, "vq", tmp_path / "vq.pt", tmp_path / "x.pt")
    with pytest.raises(ValueError, match="kind is vq in the file, kl here"):
        use_checkpoint(cfg, "kl", tmp_path / "vq.pt", tmp_path / "x.pt")
    mnist = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset="mnist"))
    with pytest.raises(ValueError, match="trained on fashion_mnist, but the data set is mnist"):
        use_checkpoint(mnist, "vq", tmp_path / "vq.pt", tmp_path / "x.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt"):
        use_checkpoint(cfg, "vq", tmp_path / "broken.pt", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
