"""The Wan 2.1 causal 3D VAE (``Wan2.1_VAE.pth``) with the official chunked encode and decode.

Video: [B, 3, T, H, W] in [-1, 1]. Latent: [B, 16, F, H/8, W/8] with F = 1 + (T - 1) // 4.

- **Encode** runs the encoder on frame chunks of 1, 4, 4, ... (frames past 1 + 4k are dropped,
  as in the official code), then ``conv1`` and keeps the first ``z_dim`` channels (the mean mu;
  the log-variance is ignored and nothing is sampled). Normalised latent = (mu - mean) / std.
- **Decode** runs ``conv2`` and then the decoder one latent frame at a time: the first frame gives
  one video frame, every later one four, so T = 4F - 3. Output is clamped to [-1, 1].
- Causal layers carry state between chunks in a :class:`~wan_animate.models.vae_blocks.CausalCache`
  created inside every call, so each call is independent (the official code clears its cache at
  the start and end of every call).

Compute follows the dtype and device of the weights (fp32 officially; bf16 works too); inputs
are cast chunk by chunk; encode/decode return float32. Inference only (no autograd).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from wan_animate.errors import InputError
from wan_animate.models.vae_blocks import (CausalCache, CausalConv3d, Decoder3d, Encoder3d,
                                           active_halo)

log = logging.getLogger(__name__)

# Per-channel latent statistics of Wan 2.1 (official ``Wan2_1_VAE.__init__``).
LATENT_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
LATENT_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

ENCODE_CHUNK = 4
"""Video frames per encoder chunk after the first frame (hard-coded in the official encode)."""

Scale = torch.Tensor | float
"""A per-channel [z_dim] tensor or one number (as the official ``scale`` entries)."""


def latent_scale(device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, inv_std)`` float32 [16] tensors, the official ``scale = [mean, 1 / std]``."""
    mean = torch.tensor(LATENT_MEAN, dtype=torch.float32, device=device)
    std = torch.tensor(LATENT_STD, dtype=torch.float32, device=device)
    return mean, 1.0 / std


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of the Wan 2.1 VAE; defaults are the full-size official values.

    Attributes:
        dim: base channel count (96).
        z_dim: latent channels (16); the encoder head emits 2 * z_dim (mu, log_var).
        dim_mult: channel multiplier per resolution level (encoder order).
        num_res_blocks: residual blocks per encoder level (the decoder uses one more).
        attn_scales: resolution scales (1.0, 0.5, ...) that get attention after each residual block.
        temporal_downsample: per level transition, whether time is halved too (encoder order;
            the decoder upsamples time in the reverse order).
        dropout: dropout inside residual blocks (0 at inference).
    """

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "attn_scales", tuple(float(s) for s in self.attn_scales))
        object.__setattr__(self, "temporal_downsample",
                           tuple(bool(t) for t in self.temporal_downsample))
        if len(self.dim_mult) < 2:
            raise ValueError(f"VAEConfig.dim_mult needs at least 2 levels, got {self.dim_mult}")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"VAEConfig.temporal_downsample has {len(self.temporal_downsample)} entries; "
                f"dim_mult {self.dim_mult} needs {len(self.dim_mult) - 1}")
        if self.dim <= 0 or self.z_dim <= 0 or self.num_res_blocks < 1:
            raise ValueError(f"VAEConfig: dim={self.dim}, z_dim={self.z_dim}, "
                             f"num_res_blocks={self.num_res_blocks} must be positive")
        if ENCODE_CHUNK % self.temporal_factor:
            raise ValueError(
                f"VAEConfig.temporal_downsample {self.temporal_downsample} halves time "
                f"{sum(self.temporal_downsample)} times; the official chunked encode (chunks of "
                f"{ENCODE_CHUNK} frames) supports at most 2")
        odd = [self.dim * m for m in self.dim_mult if (self.dim * m) % 2]
        if odd:
            raise ValueError(f"VAEConfig: level channel counts {odd} must be even (the decoder "
                             f"upsamplers halve them)")

    @classmethod
    def from_official(cls, constructor: Mapping[str, Any]) -> VAEConfig:
        """From the official ``WanVAE_`` constructor kwargs (``temperal_downsample`` spelling
        accepted), e.g. a fixture's ``config.json['constructor']``. Unknown keys are an error."""
        kwargs = dict(constructor)
        if "temperal_downsample" in kwargs:
            kwargs["temporal_downsample"] = kwargs.pop("temperal_downsample")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"VAEConfig: unknown constructor keys {unknown} (known: {sorted(known)})")
        return cls(**kwargs)

    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame (4 for Wan 2.1); must divide :data:`ENCODE_CHUNK`."""
        return 2 ** sum(self.temporal_downsample)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel along H and W (8 for Wan 2.1)."""
        return 2 ** (len(self.dim_mult) - 1)

    def encoded_frames(self, frames: int) -> int:
        """Video frames an encode actually uses: 1 + 4k <= T (the rest are dropped)."""
        return 1 + (frames - 1) // ENCODE_CHUNK * ENCODE_CHUNK

    def latent_frames(self, frames: int) -> int:
        """Latent frames for ``frames`` video frames: 1 + (T - 1) // 4 for Wan 2.1."""
        return 1 + (frames - 1) // ENCODE_CHUNK * (ENCODE_CHUNK // self.temporal_factor)

    def video_frames(self, latent_frames: int) -> int:
        """Video frames decoded from ``latent_frames``: 4 F - 3 for Wan 2.1."""
        return 1 + (latent_frames - 1) * self.temporal_factor


# Ported from Wan2.2 wan/modules/vae2_1.py::WanVAE_ (+ the Wan2_1_VAE wrapper's normalisation)
class WanVAE(nn.Module):
    """The Wan 2.1 video VAE; ``state_dict()`` keys are exactly those of ``Wan2.1_VAE.pth``.

    Build it on ``meta`` and load with :func:`wan_animate.checkpoints.load.load_into`.
    """

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        cfg = config or VAEConfig()
        self.config = cfg
        self.encoder = Encoder3d(cfg.dim, cfg.z_dim * 2, cfg.dim_mult, cfg.num_res_blocks,
                                 cfg.attn_scales, cfg.temporal_downsample, cfg.dropout)
        self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg.dim, cfg.z_dim, cfg.dim_mult, cfg.num_res_blocks,
                                 cfg.attn_scales, cfg.temporal_downsample[::-1], cfg.dropout)
        self.bands = 1
        """Encode / decode the frame in this many bands of rows, one after another (bounded
        memory, same output; :mod:`wan_animate.models.vae_bands`). 1 = the whole frame."""

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype = dtype of the weights."""
        return self.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv1.weight.device

    # ---- public API ---------------------------------------------------------------------------

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] in [-1, 1] -> normalised latent [B, 16, 1 + (T-1)//4, H/8, W/8] fp32.

        Uses the official Wan 2.1 latent mean/std (:data:`LATENT_MEAN`, :data:`LATENT_STD`).
        """
        self._check_official_z()
        mean, inv_std = latent_scale(self.device)
        return self.encode_raw(video, mean, inv_std)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """normalised latent [B, 16, F, h, w] -> video [B, 3, 4F - 3, 8h, 8w] fp32 in [-1, 1] (clamped)."""
        self._check_official_z()
        mean, inv_std = latent_scale(self.device)
        return self.decode_raw(z, mean, inv_std, clamp=True)

    @torch.no_grad()
    def encode_raw(self, video: torch.Tensor, mean: Scale, inv_std: Scale) -> torch.Tensor:
        """Official ``WanVAE_.encode(video, scale=[mean, inv_std])``: ``(mu - mean) * inv_std``.

        Args:
            video: [B, 3, T, H, W] in [-1, 1], any float dtype/device (cast chunk by chunk to the
                weights'). Frames beyond 1 + 4k are dropped (a warning is logged).
            mean, inv_std: [z_dim] tensors or numbers.
        Returns:
            [B, z_dim, 1 + (T-1)//4, H/8, W/8] float32.
        """
        if video.ndim != 5 or video.shape[1] != 3 or video.shape[2] < 1:
            raise InputError(f"VAE encode expects video [B, 3, T>=1, H, W], got {tuple(video.shape)}")
        frames = video.shape[2]
        used = self.config.encoded_frames(frames)
        if used != frames:
            log.warning("VAE encode: %d frames is not 1 + %dk; the last %d frames are dropped "
                        "(official behaviour)", frames, ENCODE_CHUNK, frames - used)
        # frame chunks [0, 1), [1, 5), [5, 9), ...
        bounds = [(0, 1)] + [(s, s + ENCODE_CHUNK) for s in range(1, used, ENCODE_CHUNK)]
        parts = self._parts(video.shape[-2] // self.config.spatial_factor)
        if parts > 1:
            from wan_animate.models.vae_bands import banded_encode

            out = banded_encode(self, video, bounds, parts)  # [B, 2z, F, h, w]
        else:
            cache = CausalCache()
            chunks: list[torch.Tensor] = []
            for start, stop in bounds:
                x = video[:, :, start:stop].to(device=self.device, dtype=self.dtype)
                chunks.append(self.encoder(x, cache))  # [B, 2z, 1 (4 / temporal_factor later), h, w]
            out = torch.cat(chunks, dim=2)
        mu = self.conv1(out)[:, :self.config.z_dim]  # [B, 2z, F, h, w] -> mu
        return (mu.float() - _per_channel(mean, mu)) * _per_channel(inv_std, mu)

    @torch.no_grad()
    def decode_raw(self, z: torch.Tensor, mean: Scale, inv_std: Scale,
                   clamp: bool = False) -> torch.Tensor:
        """Official ``WanVAE_.decode(z, scale=[mean, inv_std])``: decodes ``z / inv_std + mean``.

        Args:
            z: [B, z_dim, F, h, w] normalised latent, any float dtype/device.
            mean, inv_std: [z_dim] tensors or numbers (note the official division by ``inv_std``).
            clamp: clamp the output to [-1, 1] (the official wrapper does).
        Returns:
            [B, 3, 4F - 3, 8h, 8w] float32.
        """
        zd = self.config.z_dim
        if z.ndim != 5 or z.shape[1] != zd or z.shape[2] < 1:
            raise InputError(f"VAE decode expects a latent [B, {zd}, F>=1, h, w], got {tuple(z.shape)}")
        z = z.to(device=self.device, dtype=torch.float32)
        z = z / _per_channel(inv_std, z) + _per_channel(mean, z)
        x = self.conv2(z.to(self.dtype))  # [B, z, F, h, w]
        b, _, n_lat, h, w = x.shape
        parts = self._parts(h)
        if parts > 1:
            from wan_animate.models.vae_bands import banded_decode

            out = banded_decode(self, x, parts)
            return out.clamp_(-1.0, 1.0) if clamp else out
        sf = self.config.spatial_factor
        out = torch.empty(b, 3, self.config.video_frames(n_lat), h * sf, w * sf,
                          dtype=torch.float32, device=self.device)
        cache = CausalCache()
        pos = 0
        for i in range(n_lat):
            y = self.decoder(x[:, :, i:i + 1], cache)  # [B, 3, 1 or 4, H, W]
            out[:, :, pos:pos + y.shape[2]] = y
            pos += y.shape[2]
            del y  # free this chunk before decoding the next one
        if pos != out.shape[2]:
            raise RuntimeError(f"VAE decode produced {pos} frames, expected {out.shape[2]}")
        return out.clamp_(-1.0, 1.0) if clamp else out

    def _parts(self, rows: int) -> int:
        """Bands for a frame of ``rows`` latent rows: :attr:`bands`, at most one per row, and 1
        when the levels hold attention (it needs the whole frame)."""
        parts = min(self.bands, rows) if active_halo() is None else 1  # a pool band: whole
        if parts > 1 and self.config.attn_scales:
            log.warning("VAE bands: this VAE has attention at scales %s; it runs on the whole "
                        "frame", self.config.attn_scales)
            return 1
        return parts

    def _check_official_z(self) -> None:
        if self.config.z_dim != len(LATENT_MEAN):
            raise ValueError(f"the official latent mean/std have {len(LATENT_MEAN)} channels but "
                             f"z_dim={self.config.z_dim}; use encode_raw/decode_raw with your own")


def _per_channel(v: Scale, like: torch.Tensor) -> torch.Tensor | float:
    """A [C] tensor -> [1, C, 1, 1, 1] float32 on ``like``'s device; numbers pass through."""
    if isinstance(v, torch.Tensor):
        return v.to(device=like.device, dtype=torch.float32).reshape(1, -1, 1, 1, 1)
    return float(v)


def build_vae(config: VAEConfig | None = None, device: torch.device | str = "meta") -> WanVAE:
    """A :class:`WanVAE` built on ``device`` (meta by default: no memory, load weights next)."""
    with torch.device(device):
        return WanVAE(config)


__all__ = ["LATENT_MEAN", "LATENT_STD", "VAEConfig", "WanVAE", "build_vae", "latent_scale"]
