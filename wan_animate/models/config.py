"""Configs of the Animate DiT and its motion/face sub-networks (full-size defaults).

``DiTConfig.from_json`` reads the official ``config.json`` of Wan-AI/Wan2.2-Animate-14B; widths
the official constructor hard-codes (CLIP width of ``img_emb``, LIA motion-encoder channels and
style dim, face-encoder width) are fields too, so tiny checkpoints can shrink them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wan_animate.errors import CheckpointError, ParallelConfigError

# Official LIA channel table: feature-map size -> channels (motion_encoder.py::EncoderApp).
OFFICIAL_MOTION_CHANNELS: dict[int, int] = {
    4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def head_split_sizes(num_heads: int) -> list[int]:
    """Every GPU count that splits ``num_heads`` evenly (e.g. 40 -> 1 2 4 5 8 10 20 40)."""
    return [n for n in range(1, num_heads + 1) if num_heads % n == 0]


def check_head_split(num_heads: int, ways: int) -> None:
    """The one check that ``ways`` Ulysses ranks can split ``num_heads`` attention heads: the
    loader, the pool's mesh and the attention itself raise this same error."""
    if ways < 1 or num_heads % ways:
        raise ParallelConfigError(
            f"{ways} GPUs cannot split the DiT's {num_heads} attention heads evenly (Ulysses "
            f"splits attention by heads); use a GPU count that divides {num_heads}: "
            f"{head_split_sizes(num_heads)}")


@dataclass(frozen=True)
class MotionEncoderConfig:
    """LIA-style motion encoder: face crops [N, 3, size, size] -> motion vectors [N, style_dim]."""

    size: int = 512
    style_dim: int = 512
    motion_dim: int = 20
    channels: tuple[tuple[int, int], ...] = tuple(sorted(OFFICIAL_MOTION_CHANNELS.items()))
    direction_rows: int = 512
    """Rows of ``dec.direction.weight``; the official code hard-codes 512 (= style_dim)."""

    def channel(self, size: int) -> int:
        return dict(self.channels)[size]

    def __post_init__(self) -> None:
        if self.size & (self.size - 1) or self.size < 8:
            raise ValueError(f"motion encoder size must be a power of two >= 8, got {self.size}")
        if self.direction_rows != self.style_dim:
            raise ValueError(f"direction_rows ({self.direction_rows}) must equal style_dim "
                             f"({self.style_dim}): motion = alpha @ Q.T is added in style space")
        if self.direction_rows < self.motion_dim:
            raise ValueError(f"direction_rows ({self.direction_rows}) must be >= motion_dim "
                             f"({self.motion_dim}) for the QR basis")


@dataclass(frozen=True)
class FaceEncoderConfig:
    """Face encoder over motion vectors; ``width`` is the official hard-coded 1024."""

    width: int = 1024
    num_heads: int = 4


@dataclass(frozen=True)
class DiTConfig:
    """``WanAnimateModel`` hyper-parameters; defaults are the official 14B values."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 36
    dim: int = 5120
    ffn_dim: int = 13824
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 40
    num_layers: int = 40
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    motion_encoder_dim: int = 512
    use_img_emb: bool = True
    img_emb_in_dim: int = 1280
    clip_tokens: int = 257
    face_adapter_every: int = 5
    pose_in_dim: int = 16
    motion: MotionEncoderConfig = field(default_factory=MotionEncoderConfig)
    face: FaceEncoderConfig = field(default_factory=FaceEncoderConfig)

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if (self.dim // self.num_heads) % 2:
            raise ValueError(f"head dim {self.dim // self.num_heads} must be even (RoPE pairs)")
        if self.num_layers % self.face_adapter_every:
            raise ValueError(f"num_layers {self.num_layers} must be a multiple of "
                             f"{self.face_adapter_every} (one face adapter every "
                             f"{self.face_adapter_every} blocks)")
        if self.motion_encoder_dim != self.motion.style_dim:
            raise ValueError(f"motion_encoder_dim {self.motion_encoder_dim} != motion encoder "
                             f"style_dim {self.motion.style_dim}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_face_adapters(self) -> int:
        return self.num_layers // self.face_adapter_every

    def check_sp_size(self, sp: int) -> None:
        """Raise unless ``sp`` ranks can split the heads (Ulysses scatters heads)."""
        check_head_split(self.num_heads, sp)

    # ---- (de)serialisation -------------------------------------------------------------
    _JSON_KEYS = ("patch_size", "text_len", "in_dim", "dim", "ffn_dim", "freq_dim", "text_dim",
                  "out_dim", "num_heads", "num_layers", "qk_norm", "cross_attn_norm", "eps",
                  "motion_encoder_dim", "use_img_emb")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], overrides: dict[str, Any] | None = None) -> DiTConfig:
        """Build from official ``config.json`` keys plus ``hardcoded_overrides``.

        ``overrides`` uses the fixture format: ``img_emb_in_dim``, ``motion_encoder`` {size,
        style_dim, motion_dim, channels {size: ch}, direction_rows}, ``face_encoder`` {width,
        num_heads}. Official files carry ``_wan_animate_overrides`` in config.json for tiny
        checkpoints written by ``make-tiny-checkpoint``.
        """
        overrides = dict(overrides or cfg.get("_wan_animate_overrides", {}))
        kw: dict[str, Any] = {}
        for k in cls._JSON_KEYS:
            if k in cfg:
                kw[k] = tuple(cfg[k]) if k == "patch_size" else cfg[k]
        if "img_emb_in_dim" in overrides:
            kw["img_emb_in_dim"] = int(overrides["img_emb_in_dim"])
        style = int(kw.get("motion_encoder_dim", 512))
        m = overrides.get("motion_encoder", {})
        channels = {int(s): int(c) for s, c in m.get("channels", {}).items()} or OFFICIAL_MOTION_CHANNELS
        kw["motion"] = MotionEncoderConfig(
            size=int(m.get("size", 512)), style_dim=int(m.get("style_dim", style)),
            motion_dim=int(m.get("motion_dim", 20)), channels=tuple(sorted(channels.items())),
            direction_rows=int(m.get("direction_rows", m.get("style_dim", style))))
        f = overrides.get("face_encoder", {})
        kw["face"] = FaceEncoderConfig(width=int(f.get("width", 1024)),
                                       num_heads=int(f.get("num_heads", 4)))
        return cls(**kw)

    @classmethod
    def from_json(cls, path: str | Path) -> DiTConfig:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"missing DiT config: {path}; the checkpoint folder is incomplete: "
                                  f"`wan-animate setup download --with core --local_dir {path.parent}` "
                                  f"fetches it (for ComfyUI single files, pick dit_file etc. in the "
                                  f"loader instead of a folder)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: invalid DiT config ({e}); it is damaged or from another "
                                  f"model: `wan-animate setup download --with core --force-redownload "
                                  f"--local_dir {path.parent}` restores the official one") from e

    def to_dict(self) -> dict[str, Any]:
        """Official ``config.json`` content, plus our overrides when they differ from official."""
        out: dict[str, Any] = {"_class_name": "WanAnimateModel", "_diffusers_version": "0.33.1"}
        for k in self._JSON_KEYS:
            v = getattr(self, k)
            out[k] = list(v) if isinstance(v, tuple) else v
        out.update(window_size=[-1, -1], use_context_parallel=False)
        ov: dict[str, Any] = {}
        if self.img_emb_in_dim != 1280:
            ov["img_emb_in_dim"] = self.img_emb_in_dim
        if self.motion != MotionEncoderConfig(style_dim=512) or self.motion_encoder_dim != 512:
            m = self.motion
            ov["motion_encoder"] = {"size": m.size, "style_dim": m.style_dim,
                                    "motion_dim": m.motion_dim,
                                    "channels": {str(s): c for s, c in m.channels},
                                    "direction_rows": m.direction_rows}
        if self.face != FaceEncoderConfig():
            ov["face_encoder"] = {"width": self.face.width, "num_heads": self.face.num_heads}
        if ov:
            out["_wan_animate_overrides"] = ov
        return out
