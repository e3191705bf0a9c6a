"""Face path of the Animate DiT: face encoder over motion vectors, and the face adapters.

Ported from Wan2.2 wan/modules/animate/face_blocks.py::{FaceEncoder, FaceBlock, FaceAdapter}.
The adapter is a per-frame cross-attention: every token of latent frame ``l`` attends only to
the 5 motion tokens of frame ``l``. It therefore needs no sequence gather under sequence
parallelism: each rank attends its own contiguous token range, frame by frame, and padded
tokens (beyond the real length) are left untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wan_animate.models.config import DiTConfig
from wan_animate.models.norms import RMSNorm, linear


class CausalConv1d(nn.Module):
    """Conv1d with (k-1) frames of left *replicate* padding (causal in time)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.k = k
        self.conv = nn.Conv1d(cin, cout, k, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] -> [B, C', T']."""
        x = F.pad(x, (self.k - 1, 0), mode="replicate")
        return self.conv(x.to(self.conv.weight.dtype))


class FaceEncoder(nn.Module):
    """Motion vectors [B, T, style] -> motion tokens [B, T', heads + 1, C] (T' = (T-1)//4 + 1).

    The last of the heads+1 tokens per frame is the learned ``padding_tokens``.
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        w, n = cfg.face.width, cfg.face.num_heads
        self.num_heads, self.width = n, w
        self.conv1_local = CausalConv1d(cfg.motion_encoder_dim, w * n, 3, stride=1)
        self.conv2 = CausalConv1d(w, w, 3, stride=2)
        self.conv3 = CausalConv1d(w, w, 3, stride=2)
        self.out_proj = nn.Linear(w, cfg.dim)
        self.padding_tokens = nn.Parameter(torch.empty(1, 1, 1, cfg.dim))

    def _norm_act(self, x: torch.Tensor) -> torch.Tensor:
        # LayerNorm without affine (fp32, as under the official autocast) then SiLU
        return F.silu(F.layer_norm(x.float(), (self.width,), eps=1e-6)).to(x.dtype)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        b = motion.shape[0]
        x = self.conv1_local(motion.transpose(1, 2))                 # [B, S, T] -> [B, n*w, T]
        x = x.unflatten(1, (self.num_heads, self.width))             # -> [B, n, w, T]
        x = x.flatten(0, 1).transpose(1, 2)                          # -> [B*n, T, w]
        x = self._norm_act(x)
        x = self.conv2(x.transpose(1, 2)).transpose(1, 2)            # -> [B*n, T2, w]
        x = self._norm_act(x)
        x = self.conv3(x.transpose(1, 2)).transpose(1, 2)            # -> [B*n, T', w]
        x = self._norm_act(x)
        x = linear(self.out_proj, x)                                 # -> [B*n, T', C]
        x = x.unflatten(0, (b, self.num_heads)).transpose(1, 2)      # -> [B, T', n, C]
        pad = self.padding_tokens.to(x.dtype).expand(b, x.shape[1], 1, -1)
        return torch.cat([x, pad], dim=2)                            # -> [B, T', n+1, C]


class FaceBlock(nn.Module):
    """One face adapter layer: per-frame attention from DiT tokens to that frame's motion tokens."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.linear1_kv = nn.Linear(dim, 2 * dim)
        self.linear1_q = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, dim)
        self.q_norm = RMSNorm(self.head_dim, eps=1e-6)
        self.k_norm = RMSNorm(self.head_dim, eps=1e-6)

    def forward(self, x: torch.Tensor, motion_vec: torch.Tensor, token_start: int,
                frame_tokens: int, real_len: int) -> torch.Tensor:
        """Residual of the adapter for this rank's tokens.

        Args:
            x: [B, Ll, C] tokens of global range [token_start, token_start + Ll), any dtype.
            motion_vec: [B, F, K, C] motion tokens per latent frame (K = 5).
            frame_tokens: tokens per latent frame (H' * W').
            real_len: F * frame_tokens; tokens at or beyond it are padding and get 0.
        Returns:
            [B, Ll, C] in x's dtype.
        """
        b, ll, c = x.shape
        n, d = self.num_heads, self.head_dim
        dim = c
        mot = F.layer_norm(motion_vec.float(), (dim,), eps=1e-6).to(motion_vec.dtype)
        feat = F.layer_norm(x.float(), (dim,), eps=1e-6).to(x.dtype)
        kv = linear(self.linear1_kv, mot)                           # [B, F, K, 2C]
        k, v = kv.unflatten(-1, (2, n, d)).unbind(-3)               # -> 2 x [B, F, K, N, D]
        q = linear(self.linear1_q, feat).unflatten(-1, (n, d))      # [B, Ll, N, D]
        q = self.q_norm(q).to(v.dtype)
        k = self.k_norm(k).to(v.dtype)
        out = q.new_zeros(b, ll, n, d)
        stop = min(token_start + ll, real_len)
        pos = token_start
        while pos < stop:  # NOTE: contiguous tokens, so at most F+1 segments per rank
            f = pos // frame_tokens
            seg_end = min(stop, (f + 1) * frame_tokens)
            lo, hi = pos - token_start, seg_end - token_start
            qs = q[:, lo:hi].transpose(1, 2)                        # [B, N, Ls, D]
            ks, vs = k[:, f].transpose(1, 2), v[:, f].transpose(1, 2)  # [B, N, K, D]
            out[:, lo:hi] = F.scaled_dot_product_attention(qs, ks, vs).transpose(1, 2)
            pos = seg_end
        y = linear(self.linear2, out.flatten(2))                    # [B, Ll, C]
        if stop - token_start < ll:  # padded tokens: no adapter contribution
            y[:, max(stop - token_start, 0):] = 0
        return y.to(x.dtype)


class FaceAdapter(nn.Module):
    """``fuser_blocks[j]`` runs after DiT block ``j * every``."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.fuser_blocks = nn.ModuleList(
            [FaceBlock(cfg.dim, cfg.num_heads) for _ in range(cfg.num_face_adapters)])
