"""Layers of the Wan 2.1 causal 3D VAE: causal convs, their per-call cache, encoder and decoder.

Video tensors are ``[B, C, T, H, W]`` (B batch, C channels, T frames, H/W height/width).
Everything is *causal in time*: an output frame depends only on the current and earlier input
frames. The VAE runs a video chunk by chunk (see :mod:`wan_animate.models.vae`); what a layer
must remember from the previous chunk lives in a :class:`CausalCache` made fresh for every
encode/decode call, so two calls never share state.

Module and parameter names follow the official ``WanVAE_`` so that ``Wan2.1_VAE.pth`` loads
without any key mapping (e.g. ``residual.{0,2,3,6}``, ``resample.1``, ``time_conv``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import chain
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CACHE_T = 2
"""Input frames a causal 3x3x3 conv keeps from the previous chunk (its temporal receptive field - 1)."""


class CausalCache:
    """Temporal state carried between the chunks of ONE encode or decode call.

    Maps a layer to what it needs from the previous chunk: the last ``CACHE_T`` input frames of
    a :class:`CausalConv3d`, the last frame of a temporal downsampler, or a "first chunk done"
    marker of a temporal upsampler. Keys are the layer objects themselves.
    """

    def __init__(self) -> None:
        self._state: dict[nn.Module, Any] = {}

    def get(self, layer: nn.Module) -> Any:
        return self._state.get(layer)

    def put(self, layer: nn.Module, value: Any) -> None:
        self._state[layer] = value

    def __len__(self) -> int:
        return len(self._state)


class RowHalo:
    """What a VAE running on one horizontal band of the frame puts around its rows.

    The unsplit VAE zero-pads every spatial conv. A row-split VAE (each pool rank, or each part
    of a bounded decode, holds the rows of one band) needs the neighbouring bands' boundary rows
    there instead, and its mid-block attention needs every row's keys. A subclass provides them
    (:class:`wan_animate.distributed.vae_split.RowExchange` over a process group); the layers
    below call it while it is active (:func:`row_split`). This base class is the unsplit frame:
    zeros above and below, and a band that is already the whole frame.
    """

    def pad(self, x: torch.Tensor, cols: tuple[int, int], rows: tuple[int, int],
            front: int = 0) -> torch.Tensor:
        """x [..., H, W] -> [..., (front +) top + H + bottom, left + W + right].

        ``rows`` = (top, bottom) rows from the bands above / below (zeros at the frame's edges),
        ``cols`` zero columns, ``front`` zero frames before dim 2 of a 5-D [B, C, T, H, W] input.
        """
        left, right = cols
        top, bottom = rows
        pads = (left, right, top, bottom) + ((front, 0) if x.ndim == 5 else ())
        return F.pad(x, pads)

    def all_rows(self, x: torch.Tensor) -> torch.Tensor:
        """This band's [..., h, W] -> the whole frame's [..., H, W] (rows of every band, in order)."""
        return x


_ROW_HALO: ContextVar[RowHalo | None] = ContextVar("vae_row_halo", default=None)


@contextmanager
def row_split(halo: RowHalo) -> Iterator[RowHalo]:
    """While active, the VAE's spatial convs and attention take their boundary rows from ``halo``
    (the caller feeds the VAE one band of rows; see :mod:`wan_animate.distributed.vae_split`)."""
    token = _ROW_HALO.set(halo)
    try:
        yield halo
    finally:
        _ROW_HALO.reset(token)


def active_halo() -> RowHalo | None:
    """The :class:`RowHalo` of the current :func:`row_split`, or None (the whole frame)."""
    return _ROW_HALO.get()


def _last_frames(prev: torch.Tensor | None, x: torch.Tensor, n: int) -> torch.Tensor:
    """The last ``n`` frames of ``cat(prev, x)`` along time, without building the concatenation.

    x [B, C, T, H, W], prev [B, C, Tp, H, W] or None -> [B, C, min(n, Tp + T), H, W] (a copy).
    """
    t = x.shape[2]
    if t >= n or prev is None:
        return x[:, :, -n:].clone()
    return torch.cat([prev[:, :, -(n - t):], x], dim=2)


# Ported from Wan2.2 wan/modules/vae2_1.py::CausalConv3d
class CausalConv3d(nn.Conv3d):
    """3D conv padded only at the front in time (2 * p_t frames) and symmetrically in space.

    With a cache, the front padding is replaced by the input frames remembered from the previous
    chunk (zeros only for what is still missing), so running a video chunk by chunk gives the
    same result as running it whole. Convs with a temporal kernel of 1 ignore the cache.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1,
                 padding: int | tuple[int, int, int] = 0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        pad_t, pad_h, pad_w = self.padding  # normalised to a triple by nn.Conv3d
        self.front_pad = 2 * int(pad_t)
        self.space_pad = (int(pad_w), int(pad_w), int(pad_h), int(pad_h))
        self.padding = (0, 0, 0)  # padding is applied explicitly in forward

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """x [B, Cin, T, H, W] -> [B, Cout, T', H', W'] (T' = T for stride 1 with a 3-tap kernel)."""
        front = self.front_pad
        if cache is not None and front > 0:
            prev = cache.get(self)
            cache.put(self, _last_frames(prev, x, CACHE_T))
            if prev is not None:
                x = torch.cat([prev, x], dim=2)
                front -= prev.shape[2]
        halo = active_halo()
        pw, _, ph, _ = self.space_pad
        if halo is None or ph == 0:
            x = F.pad(x, (*self.space_pad, front, 0))
        else:  # a band of rows: the neighbours' boundary rows instead of zeros
            x = halo.pad(x, (pw, pw), (ph, ph), front)
        return super().forward(x)


# Ported from Wan2.2 wan/modules/vae2_1.py::RMS_norm
class RMSNorm(nn.Module):
    """L2-normalise over channels (dim 1), times sqrt(C) and a learned gain; no centring, no bias.

    ``gamma`` is [C, 1, 1, 1] for videos [B, C, T, H, W] and [C, 1, 1] for images [B, C, H, W]
    (the official checkpoint stores both layouts).
    """

    def __init__(self, dim: int, images: bool) -> None:
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


def apply_layer(layer: nn.Module, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    """``layer(x)``; a causal layer (one that takes a cache) gets ``cache`` too."""
    return layer(x, cache) if isinstance(layer, _CAUSAL) else layer(x)


def run_layers(layers: Iterable[nn.Module], x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    """Apply ``layers`` in order (:func:`apply_layer`)."""
    for layer in layers:
        x = apply_layer(layer, x, cache)
    return x


# Ported from Wan2.2 wan/modules/vae2_1.py::ResidualBlock
class ResidualBlock(nn.Module):
    """RMS -> SiLU -> CausalConv 3^3 -> RMS -> SiLU -> Dropout -> CausalConv 3^3, plus a 1^3
    shortcut conv when the channel count changes. [B, Cin, T, H, W] -> [B, Cout, T, H, W]."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        # NOTE: indices 0, 2, 3, 6 are the official checkpoint keys; keep this layout.
        self.residual = nn.Sequential(
            RMSNorm(in_dim, images=False), nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False), nn.SiLU(), nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut: nn.Module = (CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim
                                    else nn.Identity())

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        h = self.shortcut(x)
        return run_layers(self.residual, x, cache) + h


# Ported from Wan2.2 wan/modules/vae2_1.py::AttentionBlock
class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each frame separately (no temporal
    mixing, so no cache). [B, C, T, H, W] -> [B, C, T, H, W]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # [B, C, T, H, W] -> [B*T, C, H, W]
        y = self.to_qkv(self.norm(y))  # [B*T, 3C, H, W]
        halo = active_halo()
        if halo is None:
            # [B*T, 3C, H, W] -> [B*T, 1, H*W, 3C] -> 3 x [B*T, 1, H*W, C]
            q, k, v = _tokens(y).chunk(3, dim=-1)
        else:  # a band's queries attend to the keys of the whole frame
            q = _tokens(y[:, :c])
            k, v = _tokens(halo.all_rows(y[:, c:])).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)  # [B*T, 1, H*W, C]
        y = y.squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)  # -> [B*T, C, H, W]
        y = self.proj(y)
        y = y.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)  # [B*T, C, H, W] -> [B, C, T, H, W]
        return x + y


def _tokens(y: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, 1, H*W, C] (contiguous)."""
    n, c, h, w = y.shape
    return y.reshape(n, 1, c, h * w).permute(0, 1, 3, 2).contiguous()


class NearestUpsample2x(nn.Module):
    """2x 'nearest-exact' spatial upsampling computed in float32 (as the official code does
    for bf16 safety), returned in the input dtype. [N, C, H, W] -> [N, C, 2H, 2W]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.float(), scale_factor=(2.0, 2.0), mode="nearest-exact").type_as(x)


RESAMPLE_MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")


# Ported from Wan2.2 wan/modules/vae2_1.py::Resample
class Resample(nn.Module):
    """Spatial x2 up/down sampling per frame, optionally with x2 temporal up/down sampling.

    - ``downsample2d``: zero-pad right/bottom by 1, 3x3 conv with stride 2. [B, C, T, H, W] ->
      [B, C, T, H/2, W/2].
    - ``downsample3d``: the same, then a temporal (3,1,1) conv with stride 2 over the previous
      chunk's last frame + this chunk. The first chunk passes through (1 frame stays 1 frame);
      a later chunk of T frames (T even) gives T/2 frames.
    - ``upsample2d``: nearest x2, 3x3 conv halving the channels. [B, C, T, H, W] ->
      [B, C/2, T, 2H, 2W].
    - ``upsample3d``: first a causal temporal conv C -> 2C whose two halves are interleaved into
      2T frames, then as ``upsample2d``. The first chunk of a call skips the temporal conv (the
      official 'Rep' marker), so one latent frame gives one frame; later chunks double T.
    """

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        if mode not in RESAMPLE_MODES:
            raise ValueError(f"Resample mode {mode!r} is not one of {RESAMPLE_MODES}")
        self.mode = mode
        # NOTE: index 1 of `resample` is the conv of the official checkpoint keys.
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(NearestUpsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        b, c, t, h, w = x.shape
        y = self._resample(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))  # [B*T, C', H', W']
        x = y.reshape(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)  # -> [B, C', T, H', W']
        if self.mode == "downsample3d":
            x = self._halve_frames(x, cache)
        return x

    def _resample(self, y: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C', H*2 or H/2, ...]; on a band, the neighbours' rows pad it."""
        halo = active_halo()
        if halo is None:
            return self.resample(y)
        conv = self.resample[1]
        if self.mode.startswith("upsample"):  # nearest x2, then a 3x3 conv with padding 1
            y = halo.pad(self.resample[0](y), (1, 1), (1, 1))
            return F.conv2d(y, conv.weight, conv.bias)
        return conv(halo.pad(y, (0, 1), (0, 1)))  # zero column right, next band's first row below

    def _double_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, C, 2T, H, W] (unchanged on the first chunk of a call)."""
        if cache.get(self) is None:
            cache.put(self, True)
            return x
        b, c, t, h, w = x.shape
        # From the second chunk on the time conv is an ordinary cached causal conv; on its first
        # use the front padding is zeros, which equals the official zero-prefixed 'Rep' cache.
        y = self.time_conv(x, cache)  # [B, 2C, T, H, W]
        y = y.reshape(b, 2, c, t, h, w)  # [B, 2C, T, H, W] -> [B, 2, C, T, H, W]
        y = torch.stack((y[:, 0], y[:, 1]), dim=3)  # -> [B, C, T, 2, H, W]
        return y.reshape(b, c, 2 * t, h, w)  # -> [B, C, 2T, H, W], frame 2i+j from half j

    def _halve_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, C, T/2, H, W] (unchanged on the first chunk of a call)."""
        prev = cache.get(self)
        cache.put(self, x[:, :, -1:].clone())
        if prev is None:
            return x
        return self.time_conv(torch.cat([prev, x], dim=2))  # (1 + T) frames, kernel 3, stride 2


_CAUSAL = (CausalConv3d, ResidualBlock, AttentionBlock, Resample)


def _scale_blocks(in_dim: int, out_dim: int, count: int, dropout: float,
                  with_attention: bool) -> tuple[list[nn.Module], int]:
    """``count`` residual blocks (each followed by attention if asked) -> (blocks, out_dim)."""
    blocks: list[nn.Module] = []
    for _ in range(count):
        blocks.append(ResidualBlock(in_dim, out_dim, dropout))
        if with_attention:
            blocks.append(AttentionBlock(out_dim))
        in_dim = out_dim
    return blocks, out_dim


# Ported from Wan2.2 wan/modules/vae2_1.py::Encoder3d
class Encoder3d(nn.Module):
    """One chunk of video [B, 3, T, H, W] -> [B, z_out, T', H/2^k, W/2^k] (k = len(dim_mult) - 1;
    T' = 1 for the first chunk, T / 2^(temporal downsamples) for later ones)."""

    def __init__(self, dim: int, z_out: int, dim_mult: Sequence[int], num_res_blocks: int,
                 attn_scales: Sequence[float], temporal_downsample: Sequence[bool],
                 dropout: float) -> None:
        super().__init__()
        dims = [dim * m for m in (1, *dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        scale = 1.0
        out_dim = dims[0]
        for i, (in_dim, level_dim) in enumerate(zip(dims[:-1], dims[1:])):
            level, out_dim = _scale_blocks(in_dim, level_dim, num_res_blocks, dropout,
                                           scale in attn_scales)
            blocks += level
            if i < len(dim_mult) - 1:
                blocks.append(Resample(out_dim, "downsample3d" if temporal_downsample[i]
                                       else "downsample2d"))
                scale /= 2.0
        self.downsamples = nn.Sequential(*blocks)
        self.middle = nn.Sequential(ResidualBlock(out_dim, out_dim, dropout), AttentionBlock(out_dim),
                                    ResidualBlock(out_dim, out_dim, dropout))
        self.head = nn.Sequential(RMSNorm(out_dim, images=False), nn.SiLU(),
                                  CausalConv3d(out_dim, z_out, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        # NOTE: one pass over all layers, so no caller frame keeps a full-resolution activation
        # alive while later layers run (peak memory equals the official loop's).
        return run_layers(chain((self.conv1,), self.downsamples, self.middle, self.head), x, cache)


# Ported from Wan2.2 wan/modules/vae2_1.py::Decoder3d
class Decoder3d(nn.Module):
    """One latent frame [B, z_dim, 1, h, w] -> [B, 3, T', h*2^k, w*2^k] (T' = 1 on the first chunk
    of a call, 2^(temporal upsamples) afterwards)."""

    def __init__(self, dim: int, z_dim: int, dim_mult: Sequence[int], num_res_blocks: int,
                 attn_scales: Sequence[float], temporal_upsample: Sequence[bool],
                 dropout: float) -> None:
        super().__init__()
        dims = [dim * m for m in (dim_mult[-1], *reversed(dim_mult))]
        scale = 1.0 / 2 ** (len(dim_mult) - 2)
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0], dropout), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0], dropout))
        blocks: list[nn.Module] = []
        out_dim = dims[0]
        for i, (in_dim, level_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # the previous upsample halved the channels
            level, out_dim = _scale_blocks(in_dim, level_dim, num_res_blocks + 1, dropout,
                                           scale in attn_scales)
            blocks += level
            if i < len(dim_mult) - 1:
                blocks.append(Resample(out_dim, "upsample3d" if temporal_upsample[i]
                                       else "upsample2d"))
                scale *= 2.0
        self.upsamples = nn.Sequential(*blocks)
        self.head = nn.Sequential(RMSNorm(out_dim, images=False), nn.SiLU(),
                                  CausalConv3d(out_dim, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        return run_layers(chain((self.conv1,), self.middle, self.upsamples, self.head), x, cache)
