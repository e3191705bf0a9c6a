"""The Wan2.2-Animate DiT (``WanAnimateModel``) with official state-dict key names.

Ported from Wan2.2 wan/modules/animate/model_animate.py::WanAnimateModel. One code path for
one GPU and for many: the token sequence layout (``SequenceParallel``) and the self-attention
backend are set from outside with :meth:`AnimateDiT.set_parallel`; the face adapter works per
latent frame on the unpadded tokens this rank holds, so it needs no gather.

Alphabet: B batch, F latent frames incl. the reference frame (lat_t + 1), h/w latent size,
H'/W' token grid (h/2, w/2), L = F*H'*W' tokens, C model dim, T pixel frames of a clip.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wan_animate.models.attention import NoSequenceParallel, SequenceParallel
from wan_animate.models.config import DiTConfig
from wan_animate.models.dit_blocks import AttentionBlock, Head, MLPProj, linear_fp32
from wan_animate.models.face import FaceAdapter, FaceEncoder
from wan_animate.models.motion import MotionEncoder
from wan_animate.models.norms import linear
from wan_animate.models.rope import rope_tables


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t [B] (integer timesteps 0..1000) -> [B, dim] fp32 = cat[cos, sin](t * 10000^(-k/half)).

    Computed in float64 from the integer timestep, then rounded once to float32.
    """
    half = dim // 2
    pos = t.to(torch.float64)
    omega = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    ang = torch.outer(pos, omega)
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1).float()


class AnimateDiT(nn.Module):
    """Flow-matching velocity model of Wan2.2-Animate (17.3 B parameters at full size)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, c, cfg.patch_size, stride=cfg.patch_size)
        self.pose_patch_embedding = nn.Conv3d(cfg.pose_in_dim, c, cfg.patch_size,
                                              stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, c), nn.GELU(approximate="tanh"),
                                            nn.Linear(c, c))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, c), nn.SiLU(), nn.Linear(c, c))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.blocks = nn.ModuleList([
            AttentionBlock(c, cfg.ffn_dim, cfg.num_heads, cfg.eps, cfg.clip_tokens,
                           cfg.cross_attn_norm) for _ in range(cfg.num_layers)])
        self.head = Head(c, cfg.out_dim, cfg.patch_size, cfg.eps)
        self.img_emb = MLPProj(cfg.img_emb_in_dim, c)
        self.motion_encoder = MotionEncoder(cfg.motion)
        self.face_adapter = FaceAdapter(cfg)
        self.face_encoder = FaceEncoder(cfg)
        self.parallel: SequenceParallel = NoSequenceParallel()
        self.block_runner: Callable[..., torch.Tensor] | None = None
        self._rope: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    # ---- parallel seam ------------------------------------------------------------------
    def set_parallel(self, parallel: SequenceParallel) -> None:
        """Set the token layout + self-attention backend (Ulysses, local...). No forward rewrite."""
        self.cfg.check_sp_size(parallel.size)
        self.parallel = parallel

    def set_block_runner(self, runner: Callable[..., torch.Tensor] | None) -> None:
        """Run each block as ``runner(i, block, *args)`` (block swap, offload.py); None = plain."""
        self.block_runner = runner

    # ---- conditioning encoders (constant per clip / per video) ----------------------------
    def encode_motion(self, face_pixels: torch.Tensor) -> torch.Tensor:
        """Face crops [B, 3, T, S, S] in [-1, 1] -> motion tokens [B, lat_t + 1, K, C].

        Frame 0 (the reference slot) gets zeros. Constant over the steps of a clip: compute it
        once per clip and pass ``motion_vec`` to :meth:`forward`.
        """
        b, _, t = face_pixels.shape[:3]
        faces = face_pixels.transpose(1, 2).flatten(0, 1)             # [B, 3, T, S, S] -> [B*T, 3, S, S]
        motion = self.motion_encoder(faces).unflatten(0, (b, t))       # -> [B, T, style] fp32
        wdt = self.face_encoder.out_proj.weight.dtype
        tokens = self.face_encoder(motion.to(wdt))                     # -> [B, T', K, C]
        return torch.cat([tokens.new_zeros(b, 1, *tokens.shape[2:]), tokens], dim=1)

    def embed_context(self, context: Sequence[torch.Tensor] | torch.Tensor,
                      clip_fea: torch.Tensor) -> torch.Tensor:
        """Text [B][Li, text_dim] (zero-padded to text_len, no mask) + CLIP [B, 257, Ci] -> [B, 257 + text_len, C]."""
        if isinstance(context, torch.Tensor) and context.dim() == 3:
            context = list(context)
        rows = []
        for u in context:
            if u.shape[0] > self.cfg.text_len:
                raise ValueError(f"text context has {u.shape[0]} tokens > text_len {self.cfg.text_len}")
            rows.append(torch.cat([u, u.new_zeros(self.cfg.text_len - u.shape[0], u.shape[1])]))
        txt = torch.stack(rows)                                                   # [B, 512, text_dim]
        t0, act, t2 = self.text_embedding
        txt = linear(t2, act(linear(t0, txt)))                                    # -> [B, 512, C]
        img = self.img_emb(clip_fea)                                              # -> [B, 257, C]
        return torch.cat([img.to(txt.dtype), txt], dim=1)

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t [B] int -> (e [B, C], e0 [B, 6, C]), both fp32."""
        e = linear_fp32(self.time_embedding[2], F.silu(
            linear_fp32(self.time_embedding[0], sinusoidal_embedding(t, self.cfg.freq_dim))))
        e0 = linear_fp32(self.time_projection[1], F.silu(e)).unflatten(1, (6, self.cfg.dim))
        return e, e0

    def embed_video(self, x: torch.Tensor, y: torch.Tensor, pose_latents: torch.Tensor) -> torch.Tensor:
        """x [B, 16, F, h, w], y [B, 20, F, h, w], pose [B, 16, F-1, h, w] -> [B, C, F, H', W']."""
        wdt = self.patch_embedding.weight.dtype
        xe = self.patch_embedding(torch.cat([x, y], dim=1).to(wdt))         # [B, 36, F, h, w] -> [B, C, F, H', W']
        pe = self.pose_patch_embedding(pose_latents.to(wdt))                # -> [B, C, F-1, H', W']
        return torch.cat([xe[:, :, :1], xe[:, :, 1:] + pe], dim=2)

    # ---- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, clip_fea: torch.Tensor,
                context: Sequence[torch.Tensor] | torch.Tensor, y: torch.Tensor,
                pose_latents: torch.Tensor, face_pixels: torch.Tensor | None = None,
                motion_vec: torch.Tensor | None = None, context_emb: torch.Tensor | None = None,
                record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Predict the flow velocity.

        Args:
            x: noisy latent [B, 16, F, h, w]; frame 0 is the reference slot.
            t: timesteps [B] int64 on the 0..1000 scale (truncated sigma * 1000).
            clip_fea: CLIP tokens of the reference [B, 257, img_emb_in_dim].
            context: T5 outputs, a list of B tensors [Li, text_dim] (trimmed) or [B, Li, text_dim].
            y: [B, 20, F, h, w] = 4 mask channels | 16 conditioning-latent channels.
            pose_latents: [B, 16, F-1, h, w] (no reference frame).
            face_pixels: face crops [B, 3, T, S, S] in [-1, 1]; or give ``motion_vec``.
            motion_vec: precomputed :meth:`encode_motion` output [B, F, K, C].
            context_emb: precomputed :meth:`embed_context` output [B, 257 + text_len, C].
            record: if a dict, intermediate tensors are stored in it (parity checks).
        Returns:
            velocity [B, 16, F, h, w] fp32.
        """
        cfg, sp = self.cfg, self.parallel
        if x.shape[2] != y.shape[2] or pose_latents.shape[2] != x.shape[2] - 1:
            raise ValueError(f"frame counts disagree: x {tuple(x.shape)}, y {tuple(y.shape)}, "
                             f"pose_latents {tuple(pose_latents.shape)} (pose needs F-1 frames)")
        if motion_vec is None:
            if face_pixels is None:
                raise ValueError("give face_pixels or motion_vec")
            motion_vec = self.encode_motion(face_pixels)
        if motion_vec.shape[1] != x.shape[2]:
            raise ValueError(f"motion tokens cover {motion_vec.shape[1]} latent frames, x has "
                             f"{x.shape[2]} (face video must have 4*(F-2)+1 frames)")
        if context_emb is None:
            context_emb = self.embed_context(context, clip_fea)
        e, e0 = self.embed_time(t)
        video = self.embed_video(x, y, pose_latents)                  # [B, C, F, H', W']
        grid = tuple(video.shape[2:])
        frame_tokens = grid[1] * grid[2]
        length = math.prod(grid)
        tokens = video.flatten(2).transpose(1, 2)                     # -> [B, L, C]
        if record is not None:
            record.update(context_embedded=context_emb[:, cfg.clip_tokens:],
                          clip_embedded=context_emb[:, :cfg.clip_tokens], time_embedding_e=e,
                          time_projection_e0=e0, x_patch_embedded_plus_pose=video,
                          motion_vec_padded=motion_vec)
        h = sp.shard(tokens)                                          # -> [B, Ll, C]
        start = sp.local_range(length)[0]           # global index of this rank's first token
        rope = self._rope_for(grid, start, start + h.shape[1], h.device)
        for i, block in enumerate(self.blocks):
            if self.block_runner is None:
                h = block(h, e0, context_emb, rope, sp.attention, length)
            else:
                h = self.block_runner(i, block, h, e0, context_emb, rope, sp.attention, length)
            if record is not None:
                record[f"block{i:02d}_out"] = h
            if i % cfg.face_adapter_every == 0:
                adapter = self.face_adapter.fuser_blocks[i // cfg.face_adapter_every]
                h = h + adapter(h, motion_vec, start, frame_tokens, length).float()
                if record is not None:
                    record[f"block{i:02d}_after_face_adapter"] = h
        out = self.head(h, e)                                         # [B, Ll, 64] fp32
        out = sp.gather(out, length)                                  # -> [B, L, 64]
        if record is not None:
            record["head_out"] = out
        return self.unpatchify(out, grid)

    def _rope_for(self, grid: tuple[int, ...], start: int, stop: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE (cos, sin) of this rank's tokens; kept for the next step (same size and slice)."""
        key = (grid, start, stop, device)
        if self._rope is None or self._rope[0] != key:
            self._rope = (key, rope_tables(grid, self.cfg.head_dim, start, stop, device=device))
        return self._rope[1]

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """[B, L, pt*ph*pw*c] -> [B, c, F*pt, H'*ph, W'*pw] fp32 (c fastest in the patch channels)."""
        b = tokens.shape[0]
        pt, ph, pw = self.cfg.patch_size
        f, hh, ww = grid
        c = self.cfg.out_dim
        u = tokens.reshape(b, f, hh, ww, pt, ph, pw, c)
        u = torch.einsum("bfhwpqrc->bcfphqwr", u)
        return u.reshape(b, c, f * pt, hh * ph, ww * pw).float()
