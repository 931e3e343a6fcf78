"""The two published tokenizers the paper uses, rebuilt so their released weights load unchanged.

- ``llamagen_vq16()``: LlamaGen's ``vq_ds16_c2i`` VQ model (FoundationVision/LlamaGen,
  ``tokenizer/tokenizer_image/vq_model.py``, config ``VQ_16``): 16384 codes of dim 8 compared
  by cosine similarity (codes and encoder outputs L2-normalised), z_channels 256, ch 128,
  ch_mult (1, 1, 2, 2, 4), 2 residual blocks per level, attention in the deepest level of
  encoder and decoder and in both middle blocks.
- ``mar_kl16()``: MAR's ``kl16`` VAE (LTH14/mar, ``models/vae.py``), an LDM ``AutoencoderKL``
  with 16 latent channels, ch 128, ch_mult (1, 1, 2, 2, 4), 2 residual blocks per level,
  attention only in the deepest encoder level (LDM's ``attn_resolutions=(16,)`` at 256 px) and
  in both middle blocks; latents are multiplied by ``MAR_KL16_SCALE`` as MAR does.

Both share the taming/LDM convolutional building blocks (GroupNorm(32, eps 1e-6), swish,
asymmetric-padding stride-2 downsampling, nearest upsampling + conv); only the module names and
the decoder's level order differ, and those names *are* the checkpoint format, so each layout
is described by a ``_Layout`` of names. The released files hold ``{"model": state_dict}``
(LlamaGen's may add its training ``args``, an ``argparse.Namespace``); ``load_published`` reads
them with ``weights_only=True``, that one class allow-listed, and checks every key and shape
before loading, so a wrong file fails with a message naming it instead of a half-loaded model.

The objects follow the project's tokenizer interface (``heptapod.tokenizers.vq``): images in
[-1, 1] as (B, 3, H, W), a ``TokenizerSpec`` in ``spec``, ``latent_scale``, and
``encode``/``decode`` (plus ``moments`` for the KL) under ``torch.no_grad``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from heptapod.tokenizers.vq import TokenizerSpec
from heptapod.utils.io import CheckpointError

# MAR multiplies kl16 latents by this before the generator sees them (and divides before
# decoding); it makes the latent means roughly unit-variance on ImageNet.
MAR_KL16_SCALE = 0.2325


# ---------------------------------------------------------------------------------------------
# Shared building blocks (taming-transformers / LDM). Their attribute names are part of the
# checkpoint keys and are identical in both code bases.


def _norm(channels: int) -> nn.GroupNorm:
    # both code bases use 32 groups and eps 1e-6, so widths must be multiples of 32
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice plus a skip; a 1x1 ``nin_shortcut`` when the width changes."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if in_ch != out_ch:
            self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # dropout is 0 in both published configs
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, q/k/v/proj_out as 1x1 convs."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)
        # (B, 1, HW, C): one head of width C, scaled by C^-1/2 as in the reference
        q, k, v = (conv(h).flatten(2).transpose(1, 2).unsqueeze(1) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding right/bottom by one (torch has no asymmetric padding)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass(frozen=True)
class _Layout:
    """Module names of one code base (they fix the state-dict keys) and its level order."""

    down: str  # encoder's list of resolution levels
    up: str  # decoder's list of resolution levels
    blocks: str  # residual blocks inside a level
    mid: tuple[str, str, str]  # resnet, attention, resnet of the middle block
    up_deepest_first: bool  # decoder levels stored in run order (LlamaGen) or by level (LDM)
    decoder_attention: bool  # attention after each residual block of the deepest decoder level


LLAMAGEN = _Layout("conv_blocks", "conv_blocks", "res", ("0", "1", "2"), True, True)
LDM = _Layout("down", "up", "block", ("block_1", "attn_1", "block_2"), False, False)


class _Level(nn.Module):
    """One resolution level: residual blocks (each optionally followed by attention), then an
    optional resampler, registered under the layout's names."""

    def __init__(self, layout: _Layout, widths: list[tuple[int, int]], attention: bool,
                 resample: nn.Module | None, resample_name: str):
        super().__init__()
        self._blocks = layout.blocks
        self.add_module(layout.blocks, nn.ModuleList(ResnetBlock(i, o) for i, o in widths))
        # the reference code bases always create the (possibly empty) attention list
        self.attn = nn.ModuleList(AttnBlock(o) for _, o in widths) if attention else nn.ModuleList()
        self._resample = resample_name if resample is not None else None
        if resample is not None:
            self.add_module(resample_name, resample)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(getattr(self, self._blocks)):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return getattr(self, self._resample)(h) if self._resample else h


def _mid(layout: _Layout, ch: int) -> nn.Sequential:
    # nn.Sequential gives "mid.0.*" for LlamaGen's ModuleList and "mid.block_1.*" for LDM's
    # named children, the same keys as the reference modules
    r1, a, r2 = layout.mid
    return nn.Sequential(OrderedDict([(r1, ResnetBlock(ch, ch)), (a, AttnBlock(ch)), (r2, ResnetBlock(ch, ch))]))


class Encoder(nn.Module):
    """conv_in -> levels (downsampling after all but the deepest) -> mid -> norm, swish, conv_out."""

    def __init__(self, layout: _Layout, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int,
                 out_channels: int, in_channels: int = 3):
        super().__init__()
        self._levels = layout.down
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        levels, block_in, last = [], ch, len(ch_mult) - 1
        for i, mult in enumerate(ch_mult):
            out = ch * mult
            widths = [(block_in if j == 0 else out, out) for j in range(num_res_blocks)]
            levels.append(_Level(layout, widths, attention=i == last,
                                 resample=Downsample(out) if i != last else None, resample_name="downsample"))
            block_in = out
        self.add_module(layout.down, nn.ModuleList(levels))
        self.mid = _mid(layout, block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in getattr(self, self._levels):
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """conv_in -> mid -> levels deepest first (num_res_blocks + 1 blocks each, upsampling after all
    but the shallowest) -> norm, swish, conv_out."""

    def __init__(self, layout: _Layout, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int,
                 in_channels: int, out_channels: int = 3):
        super().__init__()
        self._levels, self._deepest_first = layout.up, layout.up_deepest_first
        block_in, last = ch * ch_mult[-1], len(ch_mult) - 1
        self.conv_in = nn.Conv2d(in_channels, block_in, 3, padding=1)
        self.mid = _mid(layout, block_in)
        by_level: dict[int, _Level] = {}
        for i in reversed(range(len(ch_mult))):
            out = ch * ch_mult[i]
            widths = [(block_in if j == 0 else out, out) for j in range(num_res_blocks + 1)]
            by_level[i] = _Level(layout, widths, attention=layout.decoder_attention and i == last,
                                 resample=Upsample(out) if i != 0 else None, resample_name="upsample")
            block_in = out
        # LlamaGen stores the levels in the order they run (index 0 = deepest); LDM indexes them
        # by resolution level (index 0 = full resolution) and runs them in reverse
        order = sorted(by_level, reverse=layout.up_deepest_first)
        self.add_module(layout.up, nn.ModuleList(by_level[i] for i in order))
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        levels = getattr(self, self._levels)
        for level in (levels if self._deepest_first else reversed(levels)):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------------------------
# LlamaGen VQ


@dataclass(frozen=True)
class LlamaGenVQConfig:
    """``VQ_16`` defaults; smaller ``ch`` gives a cheap model of the same layout (ch % 32 == 0)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    codebook_size: int = 16384
    code_dim: int = 8
    usage_window: int = 65536  # length of the reference's ``codebook_used`` training buffer


class _Quantizer(nn.Module):
    """Holds the codebook under the reference's names (``quantize.embedding.weight``)."""

    def __init__(self, codebook_size: int, code_dim: int, usage_window: int):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, code_dim)
        with torch.no_grad():
            self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        # a record of recently used code indices kept during training by the reference; it is
        # saved in its state dict, so it is kept here for strict loading, and unused otherwise
        self.register_buffer("codebook_used", torch.zeros(usage_window))

    def codes(self) -> torch.Tensor:
        return F.normalize(self.embedding.weight, dim=-1)


class LlamaGenVQ(nn.Module):
    """Images in [-1, 1] (B, 3, H, W) <-> code grids (B, H / 16, W / 16), LlamaGen's layout."""

    latent_scale = 1.0  # discrete tokens: no scaling (common tokenizer interface)
    layout_name = "LlamaGen vq_ds16_c2i (VQ_16)"

    def __init__(self, config: LlamaGenVQConfig = LlamaGenVQConfig()):
        super().__init__()
        c = config
        self.config = c
        self.spec = TokenizerSpec("vq", 3, c.codebook_size, c.code_dim, 2 ** (len(c.ch_mult) - 1), c.ch)
        self.encoder = Encoder(LLAMAGEN, c.ch, c.ch_mult, c.num_res_blocks, c.z_channels)
        self.decoder = Decoder(LLAMAGEN, c.ch, c.ch_mult, c.num_res_blocks, c.z_channels)
        self.quantize = _Quantizer(c.codebook_size, c.code_dim, c.usage_window)
        self.quant_conv = nn.Conv2d(c.z_channels, c.code_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.code_dim, c.z_channels, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H / 16, W / 16) long indices of the nearest codes.

        With unit vectors the reference's smallest squared distance is the largest dot product.
        """
        z = F.normalize(self.quant_conv(self.encoder(images)), dim=1)
        return torch.einsum("bchw,kc->bhwk", z, self.quantize.codes()).argmax(dim=-1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        zq = self.quantize.codes()[codes].permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(zq)).clamp(-1, 1)

    def spec_dict(self) -> dict:
        return dataclasses.asdict(self.spec)


def llamagen_vq16() -> LlamaGenVQ:
    """LlamaGen's ``vq_ds16_c2i`` at its published size (about 72M parameters)."""
    return LlamaGenVQ(LlamaGenVQConfig())


# ---------------------------------------------------------------------------------------------
# MAR KL VAE


@dataclass(frozen=True)
class MARKLConfig:
    """MAR ``kl16`` defaults; smaller ``ch`` gives a cheap model of the same layout (ch % 32 == 0)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    embed_dim: int = 16
    latent_scale: float = MAR_KL16_SCALE


class MARKL(nn.Module):
    """Images in [-1, 1] (B, 3, H, W) <-> scaled latents (B, 16, H / 16, W / 16), LDM's layout."""

    layout_name = "MAR kl16 (LDM AutoencoderKL)"

    def __init__(self, config: MARKLConfig = MARKLConfig()):
        super().__init__()
        c = config
        self.config = c
        self.latent_scale = float(c.latent_scale)  # a plain attribute: not part of the state dict
        self.spec = TokenizerSpec("kl", 3, 0, c.embed_dim, 2 ** (len(c.ch_mult) - 1), c.ch)
        # LDM's encoder emits mean and log-variance ("double_z"); quant_conv maps 2e -> 2e
        self.encoder = Encoder(LDM, c.ch, c.ch_mult, c.num_res_blocks, 2 * c.embed_dim)
        self.decoder = Decoder(LDM, c.ch, c.ch_mult, c.num_res_blocks, c.embed_dim)
        self.quant_conv = nn.Conv2d(2 * c.embed_dim, 2 * c.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.embed_dim, 1)

    @torch.no_grad()
    def moments(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 2 * 16, h, w): unscaled means then log-variances (clamped to [-30, 20] as in LDM)."""
        mean, logvar = self.quant_conv(self.encoder(images)).chunk(2, dim=1)
        return torch.cat([mean, logvar.clamp(-30.0, 20.0)], dim=1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled posterior means (deterministic tokens)."""
        return self.moments(images).chunk(2, dim=1)[0] * self.latent_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 16, h, w) -> images."""
        return self.decoder(self.post_quant_conv(latents / self.latent_scale)).clamp(-1, 1)

    def spec_dict(self) -> dict:
        return dataclasses.asdict(self.spec)


def mar_kl16() -> MARKL:
    """MAR's ``kl16`` VAE at its published size."""
    return MARKL(MARKLConfig())


# ---------------------------------------------------------------------------------------------
# Loading the released files

_BUILDERS = {"vq": (LlamaGenVQ, LlamaGenVQConfig), "kl": (MARKL, MARKLConfig)}

# Entries a released file may lack or carry beyond the inference model, with no effect on
# encode/decode: LlamaGen's usage record only exists when it trained with ``show_usage``;
# LDM's AutoencoderKL keeps its training loss (LPIPS, discriminator) as the submodule ``loss``,
# which LDM-trained checkpoints can include (MAR itself loads the file with strict=False).
_OPTIONAL_KEYS = {"vq": ("quantize.codebook_used",), "kl": ()}
_TRAINING_PREFIXES = {"vq": (), "kl": ("loss.",)}


def layout_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the sorted lines ``key:d0,d1,...`` of a state dict (its layout, not values)."""
    lines = sorted(f"{k}:{','.join(str(d) for d in v.shape)}" for k, v in state_dict.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def build_published(kind: str, config: LlamaGenVQConfig | MARKLConfig | None = None) -> nn.Module:
    """A published architecture ('vq' or 'kl') with random weights; the published size by default."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown published tokenizer kind '{kind}' (known: {', '.join(_BUILDERS)})")
    cls, cfg_cls = _BUILDERS[kind]
    return cls(config if config is not None else cfg_cls())


def _shape(value: object) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _first(names: list[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


# The only non-tensor object a released file may hold: LlamaGen saves its training ``args``.
_ALLOWED_GLOBALS = (argparse.Namespace,)


def _read_published(kind: str, path: Path) -> object:
    """``torch.load`` with ``weights_only=True`` and only ``_ALLOWED_GLOBALS`` allow-listed."""
    try:
        with torch.serialization.safe_globals(list(_ALLOWED_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"GLOBAL (\S+)", str(exc))
        if refused is None:  # not a refused class: a damaged or foreign file
            raise CheckpointError(f"published {kind} checkpoint {path} is corrupt or unreadable "
                                  f"with weights_only=True: {exc}") from exc
        allowed = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in _ALLOWED_GLOBALS)
        raise CheckpointError(f"published {kind} checkpoint {path} holds a pickled {refused.group(1)}, "
                              f"which weights_only loading refused; only {allowed} is allowed "
                              f"besides tensors and plain containers") from exc
    except Exception as exc:  # truncated files, foreign formats
        raise CheckpointError(f"published {kind} checkpoint {path} is corrupt or unreadable "
                              f"with weights_only=True: {exc}") from exc


def load_published(kind: str, path: str | Path,
                   config: LlamaGenVQConfig | MARKLConfig | None = None) -> nn.Module:
    """Load a released checkpoint ``{"model": state_dict}`` into its architecture, in eval mode.

    The file is read with ``weights_only=True`` (no code from the file runs; the one class
    allowed beyond tensors and containers is ``argparse.Namespace``). Every key and
    shape is checked before loading; any mismatch raises ``CheckpointError`` naming the file
    and the first offending keys. ``config`` selects a non-published size (tests).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"published {kind} checkpoint not found: {path}")
    obj = _read_published(kind, path)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        found = f"keys {_first(sorted(map(str, obj)))}" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"published {kind} checkpoint {path} has no 'model' state dict "
                              f"(expected {{'model': state_dict}}, found {found})")
    model = build_published(kind, config)  # after the file: a bad file is named first
    state = {k: v for k, v in obj["model"].items() if not str(k).startswith(_TRAINING_PREFIXES[kind])}
    expected = model.state_dict()
    for key in _OPTIONAL_KEYS[kind]:
        state.setdefault(key, expected[key])
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [f"{k} {_shape(state[k])} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and _shape(state[k]) != tuple(v.shape)]
    if missing or unexpected or bad_shape:
        parts = [f"{len(missing)} missing key(s): {_first(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected key(s): {_first(unexpected)}" if unexpected else "",
                 f"{len(bad_shape)} shape mismatch(es) (file vs model): {_first(bad_shape)}" if bad_shape else ""]
        raise CheckpointError(f"published {kind} checkpoint {path} does not match the {model.layout_name} "
                              f"layout: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)
    return model.eval()
