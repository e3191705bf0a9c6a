"""Normalisations with the official fp32 islands (computed in fp32, cast back)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight; the statistic in fp32, the result in x's dtype."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return y * self.weight.to(x.dtype)


class FP32LayerNorm(nn.Module):
    """LayerNorm over the last dim computed in fp32; returns x's dtype.

    ``affine=False`` has no parameters (norm1/norm2 of the DiT blocks, the head's norm).
    """

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = False) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.empty(dim)) if affine else None
        self.bias = nn.Parameter(torch.empty(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), (self.dim,), w, b, self.eps).type_as(x)


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``layer`` in its weight dtype (the bf16 matmul regions of the official autocast).

    An fp8 layer (:class:`~wan_animate.models.fp8.Fp8Linear`, fast mode) quantizes its input
    itself and returns bf16.
    """
    if layer.weight.dtype == torch.float8_e4m3fn:
        return layer(x)
    return layer(x.to(layer.weight.dtype))
