import argparse

import pytest
import torch

from heptapod.tokenizers.published import (
    MAR_KL16_SCALE, LlamaGenVQConfig, MARKLConfig, build_published, layout_digest, llamagen_vq16,
    load_published, mar_kl16,
)
from heptapod.utils.io import CheckpointError

# Facts about the published layouts, computed from the reference implementations' state dicts
# (LlamaGen VQ_16(codebook_size=16384, codebook_embed_dim=8); MAR AutoencoderKL(embed_dim=16,
# ch_mult=(1, 1, 2, 2, 4))): parameter count, state-dict key count, and sha256 over the sorted
# "key:d0,d1,..." lines (layout_digest). The VQ state dict also holds the 65536-entry
# ``quantize.codebook_used`` buffer, which is not a parameter.
PUBLISHED = {
    "vq": (71_883_403, 344, "e510cd36d6509921bfde9927be2b1934396b941685fdf75cb15d5a854b8e2238"),
    "kl": (66_456_019, 312, "85834dc1ba444a43e73d87e3eee91d308cd49ddd910be420cb5c2a97d8849a25"),
}
# same layout as the published configs, narrower (GroupNorm needs multiples of 32)
SMALL = {"vq": LlamaGenVQConfig(ch=32, codebook_size=512), "kl": MARKLConfig(ch=32)}


def images(n=2, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def randomised(kind, seed=0):
    """Small model whose every weight (norms and biases included) is random."""
    torch.manual_seed(seed)
    model = build_published(kind, SMALL[kind])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(params=["vq", "kl"])
def saved(request, tmp_path):
    kind = request.param
    model = randomised(kind)
    path = tmp_path / f"{kind}.pt"
    torch.save({"model": model.state_dict()}, path)
    return kind, model, path


@pytest.mark.parametrize("kind,factory", [("vq", llamagen_vq16), ("kl", mar_kl16)])
def test_published_layouts_match_the_reference(kind, factory):
    with torch.device("meta"):
        model = factory()
    params, keys, digest = PUBLISHED[kind]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys
    assert layout_digest(model.state_dict()) == digest
    assert (model.spec.kind, model.spec.downsample, model.spec.channels, model.spec.width) == (kind, 16, 3, 128)
    # 256x256 images -> 16x16 grids at full size (shapes only, on the meta device)
    with torch.device("meta"):
        x = torch.empty(2, 3, 256, 256)
        z = model.encode(x)
        assert model.decode(z).shape == (2, 3, 256, 256)
    assert z.shape == ((2, 16, 16) if kind == "vq" else (2, 16, 16, 16))


def test_published_specs_and_scales():
    with torch.device("meta"):
        vq, kl = llamagen_vq16(), mar_kl16()
    assert (vq.spec.codebook_size, vq.spec.code_dim, vq.latent_scale) == (16384, 8, 1.0)
    assert (kl.spec.codebook_size, kl.spec.code_dim, kl.latent_scale) == (0, 16, MAR_KL16_SCALE)
    assert MAR_KL16_SCALE == 0.2325


def test_load_round_trip_shapes_and_determinism(saved):
    kind, original, path = saved
    model = load_published(kind, path, SMALL[kind])
    assert not model.training
    x = images()
    z = model.encode(x)
    assert torch.equal(z, model.encode(x))
    assert torch.equal(z, original.encode(x))  # the file's weights, all of them
    if kind == "vq":
        assert z.shape == (2, 4, 4) and z.dtype == torch.long
        assert 0 <= int(z.min()) and int(z.max()) < SMALL["vq"].codebook_size
    else:
        m = model.moments(x)
        assert m.shape == (2, 32, 4, 4)
        assert torch.allclose(z, m[:, :16] * MAR_KL16_SCALE)
        assert torch.allclose(model.decode(z), original.decode(z))
    out = model.decode(z)
    assert out.shape == (2, 3, 64, 64) and out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, model.decode(z))
    assert not z.requires_grad and not out.requires_grad


def test_vq_file_without_usage_buffer_loads(tmp_path):
    model = randomised("vq")
    state = model.state_dict()
    del state["quantize.codebook_used"]
    torch.save({"model": state}, tmp_path / "vq.pt")
    loaded = load_published("vq", tmp_path / "vq.pt", SMALL["vq"])
    assert torch.equal(loaded.encode(images()), model.encode(images()))


class _Pickled:
    """A class no loader allow-lists."""

    def __init__(self):
        self.value = 1


def test_vq_file_with_training_args_loads(tmp_path):
    """LlamaGen's released files carry the training ``args`` (an argparse.Namespace)."""
    model = randomised("vq")
    args = argparse.Namespace(vq_model="VQ-16", codebook_size=512, codebook_embed_dim=8, lr=1e-4)
    torch.save({"model": model.state_dict(), "args": args, "steps": 10}, tmp_path / "vq.pt")
    loaded = load_published("vq", tmp_path / "vq.pt", SMALL["vq"])
    assert torch.equal(loaded.encode(images()), model.encode(images()))


def test_other_pickled_objects_are_refused_naming_file_and_global(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": randomised("vq").state_dict(), "args": argparse.Namespace(a=1),
                "extra": _Pickled()}, path)
    with pytest.raises(CheckpointError) as err:
        load_published("vq", path, SMALL["vq"])
    msg = str(err.value)
    assert "foreign.pt" in msg and "_Pickled" in msg and "only argparse.Namespace is allowed" in msg


def test_missing_file_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nope.pt"):
        load_published("vq", tmp_path / "nope.pt", SMALL["vq"])


def test_corrupt_file_names_it(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt.*corrupt"):
        load_published("kl", path, SMALL["kl"])


def test_file_without_model_entry(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(randomised("kl").state_dict(), path)  # a bare state dict, not {"model": ...}
    with pytest.raises(CheckpointError, match="bare.pt.*no 'model'"):
        load_published("kl", path, SMALL["kl"])


def test_wrong_keys_and_shapes_are_listed(tmp_path):
    state = randomised("vq").state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["decoder.conv_out.bias"]
    path = tmp_path / "wrong.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_published("vq", path, SMALL["vq"])
    msg = str(err.value)
    assert "wrong.pt" in msg and "decoder.conv_out.bias" in msg and "extra.weight" in msg
    # a KL file given as VQ: the other layout's names are reported
    torch.save({"model": randomised("kl").state_dict()}, path)
    with pytest.raises(CheckpointError, match="wrong.pt.*missing key.*unexpected key"):
        load_published("vq", path, SMALL["vq"])
    # right names, wrong width (the published size against a small file)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_published("kl", path)
