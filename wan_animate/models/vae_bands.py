"""The VAE on horizontal bands of the frame, one band after another: bounded memory, same output.

A 720p decode holds ~19 GiB of fp32 activations (the causal caches of ~30 convs at full
resolution, the upsampler's float32 copies); every one of them is proportional to the frame's
rows. Here the frame is cut into bands of latent rows (:class:`RowBands`, the same cut the pool
uses, :mod:`wan_animate.distributed.vae_split`) and the heavy, convolution-only part of the
network runs band by band over the whole clip, each band with its own causal cache:

- **decode**: ``conv2`` + the decoder's ``conv1`` and middle block (its attention needs the
  whole frame; at latent resolution it is small) run on the whole frame, latent frame by latent
  frame; then the upsampling levels and the head run band by band.
- **encode**: the encoder's ``conv1`` and downsampling levels run band by band, then the
  middle block, head and ``conv1`` on the whole (latent-resolution) frame.

A band takes its neighbours' boundary rows by computing them: its input is widened by the
receptive reach of the banded layers (:func:`plan_bands`), and after every layer the rows that no
later layer needs are dropped, so the overlap is a few rows per level. What is kept is cropped
exactly; nothing is blended, and the output equals the unsplit VAE's (the convs see the same
numbers; only the tiling of the work differs).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn

from wan_animate.models.vae_blocks import (AttentionBlock, CausalCache, CausalConv3d, Resample,
                                           ResidualBlock, apply_layer, run_layers)


@dataclass(frozen=True)
class RowBands:
    """``rows`` latent rows cut into ``parts`` consecutive bands, sizes differing by at most one
    (the first ``rows % parts`` bands take one more). Pixel rows are latent rows x 8."""

    rows: int
    parts: int

    def __post_init__(self) -> None:
        if not 1 <= self.parts <= self.rows:
            raise ValueError(f"cannot cut {self.rows} latent rows into {self.parts} bands "
                             f"(each band needs at least one row)")

    @property
    def sizes(self) -> tuple[int, ...]:
        base, extra = divmod(self.rows, self.parts)
        return tuple(base + (i < extra) for i in range(self.parts))

    def bounds(self, i: int) -> tuple[int, int]:
        """Band ``i``'s latent rows [start, stop)."""
        sizes = self.sizes
        start = sum(sizes[:i])
        return start, start + sizes[i]


class NotBandable(ValueError):
    """The layers hold an attention over the whole frame, so they cannot run on a band alone."""


@dataclass(frozen=True)
class BandPlan:
    """Per layer boundary ``k`` (the input of layer ``k``; ``k = len(layers)`` the output) of a
    banded stack: ``rows[k]`` frame rows per latent row (8, 4, 2, 1 down the encoder; 1 ... 8 up
    the decoder) and ``need[k]`` the rows of margin that boundary must carry above and below a
    band so the stack's output on the band is exact."""

    rows: tuple[int, ...]
    need: tuple[int, ...]


def plan_bands(layers: Sequence[nn.Module], rows_in: int) -> BandPlan:
    """Walk ``layers`` (residual blocks, causal convs, resamplers, pointwise layers) whose input
    has ``rows_in`` rows per latent row. Raises :class:`NotBandable` on an attention block.

    Error from a band's cut edge moves ``p`` rows per conv of spatial padding ``p`` (at that
    conv's resolution), doubles through a nearest upsampler, and through a stride-2 conv
    becomes half plus the two extra input rows the 3x3 kernel reads.
    """
    rows = [rows_in]
    for layer in layers:
        r = rows[-1]
        if isinstance(layer, Resample):
            r = r * 2 if layer.mode.startswith("upsample") else r // 2
        rows.append(r)
    need = [0.0] * (len(layers) + 1)
    margin = 0.0  # in latent rows, accumulated from the output back
    for k in range(len(layers) - 1, -1, -1):
        layer = layers[k]
        if isinstance(layer, AttentionBlock):
            raise NotBandable("an attention block inside the banded levels needs the whole frame")
        if isinstance(layer, ResidualBlock):
            margin += sum(_conv_rows(m) for m in layer.residual) / rows[k]
        elif isinstance(layer, CausalConv3d):
            margin += _conv_rows(layer) / rows[k]
        elif isinstance(layer, Resample):
            # upsample: its 3x3 conv runs at the output's resolution; downsample: 2 more rows in
            margin += 1 / rows[k + 1] if layer.mode.startswith("upsample") else 2 / rows[k]
        need[k] = margin * rows[k]
    return BandPlan(tuple(rows), tuple(math.ceil(n - 1e-9) for n in need))


def _conv_rows(m: nn.Module) -> int:
    return m.space_pad[2] if isinstance(m, CausalConv3d) else 0


def _run_band(layers: Sequence[nn.Module], plan: BandPlan, x: torch.Tensor, cache: CausalCache,
              keep: tuple[int, int], have: tuple[int, int], frame: int) -> torch.Tensor:
    """Run ``layers`` on ``x``, which holds the latent rows ``have`` = [lo, hi) of a ``frame``-row
    (latent) frame at the input's resolution, so that the band ``keep`` (latent rows) comes out
    exact; after each layer only the rows later layers still need are kept. A band's start
    stays a multiple of the downsampling still to come (the stride-2 convs' phase)."""
    lo, hi = have[0] * plan.rows[0], have[1] * plan.rows[0]  # at the current resolution
    last = plan.rows[-1]
    for k, layer in enumerate(layers):
        x = apply_layer(layer, x, cache)
        r = plan.rows[k + 1]
        lo, hi = lo * r // plan.rows[k], hi * r // plan.rows[k]
        align = max(1, r // last)
        start = max(lo, (keep[0] * r - plan.need[k + 1]) // align * align)
        stop = min(hi, -(-(keep[1] * r + plan.need[k + 1]) // align) * align, frame * r)
        if start > lo or stop < hi:
            x = x[..., start - lo:x.shape[-2] - (hi - stop), :]
            lo, hi = start, stop
    return x[..., keep[0] * last - lo:keep[1] * last - lo, :]


def _window(bands: RowBands, i: int, margin: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Band ``i``'s rows and the rows it reads (widened by ``margin``, inside the frame)."""
    a, b = bands.bounds(i)
    return (a, b), (max(0, a - margin), min(bands.rows, b + margin))


@torch.no_grad()
def banded_decode(vae: nn.Module, x: torch.Tensor, parts: int) -> torch.Tensor:
    """The decoder on ``parts`` bands: x [B, z, F, h, w] (after ``conv2``, the weights' dtype)
    -> [B, 3, 4F - 3, 8h, 8w] float32 (unclamped), equal to the unsplit decoder's loop."""
    dec = vae.decoder
    b, _, n_lat, h, w = x.shape
    sf = vae.config.spatial_factor
    cache = CausalCache()
    mid = torch.cat([run_layers(chain((dec.conv1,), dec.middle), x[:, :, i:i + 1], cache)
                     for i in range(n_lat)], dim=2)  # [B, C, F, h, w], whole frame
    layers = [*dec.upsamples, *dec.head]
    plan = plan_bands(layers, 1)
    out = torch.empty(b, 3, vae.config.video_frames(n_lat), h * sf, w * sf,
                      dtype=torch.float32, device=x.device)
    bands = RowBands(h, parts)
    for i in range(parts):
        keep, have = _window(bands, i, plan.need[0])
        band = mid[..., have[0]:have[1], :]
        cache, pos = CausalCache(), 0
        for j in range(n_lat):
            y = _run_band(layers, plan, band[:, :, j:j + 1], cache, keep, have, h)
            out[:, :, pos:pos + y.shape[2], keep[0] * sf:keep[1] * sf] = y
            pos += y.shape[2]
            del y
    return out


def banded_encode(vae: nn.Module, video: torch.Tensor, bounds: Sequence[tuple[int, int]],
                  parts: int) -> torch.Tensor:
    """The encoder on ``parts`` bands: ``video`` [B, 3, T, H, W] (any device / dtype; each band's
    rows of a chunk move to the weights' device and dtype when used) cut into the frame chunks
    ``bounds`` (1, 4, 4, ...) -> the encoder output [B, 2z, F, h, w] of the unsplit loop."""
    enc = vae.encoder
    sf = vae.config.spatial_factor
    h = video.shape[-2] // sf
    layers = [enc.conv1, *enc.downsamples]
    plan = plan_bands(layers, sf)
    bands = RowBands(h, parts)
    low: list[list[torch.Tensor]] = [[] for _ in bounds]  # per chunk, the bands' outputs
    with torch.no_grad():
        for i in range(parts):
            keep, have = _window(bands, i, -(-plan.need[0] // sf))  # margin in latent rows
            cache = CausalCache()
            for j, (t0, t1) in enumerate(bounds):
                px = video[:, :, t0:t1, have[0] * sf:have[1] * sf].to(vae.device, vae.dtype)
                low[j].append(_run_band(layers, plan, px, cache, keep, have, h))
        cache = CausalCache()
        return torch.cat([run_layers(chain(enc.middle, enc.head), torch.cat(band, dim=-2), cache)
                          for band in low], dim=2)


__all__ = ["BandPlan", "NotBandable", "RowBands", "banded_decode", "banded_encode", "plan_bands"]
