"""Building blocks of the Wan2.2-Animate DiT: attention layers, transformer block, head, MLPProj.

Ported from Wan2.2 wan/modules/model.py and wan/modules/animate/model_animate.py. Precision
follows the official bf16 autocast run: Linear/Conv/attention in the weight dtype, while
modulation, norms, gated residual adds and the head are fp32 (``FP32_REGIONS``).

Alphabet: B batch, L tokens (this rank's slice), Lc context tokens, C model dim, N heads, D head dim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wan_animate.models.attention import AttentionBackend
from wan_animate.models.norms import FP32LayerNorm, RMSNorm, linear
from wan_animate.models.rope import apply_rope

FP32_REGIONS = ("modulation", "norm1", "norm2", "norm3", "gated residual adds", "time_embedding",
                "time_projection", "head", "rope angles")
"""Computed in float32 whatever the weight dtype (the official autocast(float32) islands)."""


def linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer`` computed in fp32 (official ``autocast(dtype=float32)`` regions)."""
    b = layer.bias.float() if layer.bias is not None else None
    return F.linear(x.float(), layer.weight.float(), b)


class SelfAttention(nn.Module):
    """q/k/v/o projections with RMS q/k norms over the full dim, RoPE, pluggable attention."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                attention: AttentionBackend, k_len: int) -> torch.Tensor:
        """x [B, L, C] (fp32 modulated input) -> [B, L, C] in the weight dtype."""
        n, d = self.num_heads, self.head_dim
        q = self.norm_q(linear(self.q, x)).unflatten(-1, (n, d))   # [B, L, C] -> [B, L, N, D]
        k = self.norm_k(linear(self.k, x)).unflatten(-1, (n, d))
        v = linear(self.v, x).unflatten(-1, (n, d))
        q = apply_rope(q, *rope, out_dtype=v.dtype)
        k = apply_rope(k, *rope, out_dtype=v.dtype)
        out = attention(q, k, v, k_len)                              # [B, L, N, D]
        return linear(self.o, out.flatten(2))


class CrossAttention(nn.Module):
    """Text and image cross-attention: two softmaxes summed before ``o``; nothing masked."""

    def __init__(self, dim: int, num_heads: int, eps: float, clip_tokens: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.clip_tokens = num_heads, dim // num_heads, clip_tokens
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.k_img, self.v_img = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)
        self.norm_k_img = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x [B, L, C], context [B, clip_tokens + text_len, C] (image first) -> [B, L, C]."""
        n, d = self.num_heads, self.head_dim
        img, txt = context[:, :self.clip_tokens], context[:, self.clip_tokens:]
        q = self.norm_q(linear(self.q, x)).unflatten(-1, (n, d)).transpose(1, 2)  # [B, N, L, D]
        k = self.norm_k(linear(self.k, txt)).unflatten(-1, (n, d)).transpose(1, 2)
        v = linear(self.v, txt).unflatten(-1, (n, d)).transpose(1, 2)
        ki = self.norm_k_img(linear(self.k_img, img)).unflatten(-1, (n, d)).transpose(1, 2)
        vi = linear(self.v_img, img).unflatten(-1, (n, d)).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v) + F.scaled_dot_product_attention(q, ki, vi)
        return linear(self.o, out.transpose(1, 2).flatten(2))       # [B, N, L, D] -> [B, L, C]


class AttentionBlock(nn.Module):
    """One DiT block: modulated self-attention, cross-attention, modulated FFN (fp32 residual)."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, eps: float, clip_tokens: int,
                 cross_attn_norm: bool = True) -> None:
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps)
        self.self_attn = SelfAttention(dim, num_heads, eps)
        self.norm3 = FP32LayerNorm(dim, eps, affine=True) if cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, num_heads, eps, clip_tokens)
        self.norm2 = FP32LayerNorm(dim, eps)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.empty(1, 6, dim))

    def forward(self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor], attention: AttentionBackend,
                k_len: int) -> torch.Tensor:
        """x [B, L, C] · e0 [B, 6, C] fp32 · context [B, Lc, C] -> [B, L, C] fp32."""
        mod = self.modulation.float() + e0                       # [B, 6, C] fp32
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.unsqueeze(2).unbind(1)  # [B, 1, C]
        u = self.norm1(x).float() * (1 + scale1) + shift1
        x = x + self.self_attn(u, rope, attention, k_len).float() * gate1
        x = x + self.cross_attn(self.norm3(x), context).float()
        u = self.norm2(x).float() * (1 + scale2) + shift2
        h = self.ffn[2](self.ffn[1](linear(self.ffn[0], u)))
        return x + h.float() * gate2


class Head(nn.Module):
    """Final modulated LayerNorm + Linear to patch channels, all in fp32."""

    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float) -> None:
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps)
        self.head = nn.Linear(dim, out_dim * patch_size[0] * patch_size[1] * patch_size[2])
        self.modulation = nn.Parameter(torch.empty(1, 2, dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x [B, L, C], e [B, C] fp32 -> [B, L, prod(patch) * out_dim] fp32."""
        shift, scale = (self.modulation.float() + e.float()[:, None]).unsqueeze(2).unbind(1)
        return linear_fp32(self.head, self.norm(x).float() * (1 + scale) + shift)


class MLPProj(nn.Module):
    """CLIP tokens -> model dim: LN -> Linear -> GELU(erf) -> Linear -> LN (eps 1e-5)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, in_dim), nn.GELU(),
                                  nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 257, in_dim] -> [B, 257, C] in the weight dtype."""
        ln0, fc1, act, fc2, ln4 = self.proj
        h = F.layer_norm(x.float(), ln0.normalized_shape, ln0.weight.float(), ln0.bias.float(), ln0.eps)
        h = linear(fc2, act(linear(fc1, h)))
        h = F.layer_norm(h.float(), ln4.normalized_shape, ln4.weight.float(), ln4.bias.float(), ln4.eps)
        return h.to(fc2.weight.dtype)
