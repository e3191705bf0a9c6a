"""fp8 (e4m3) linears for the opt-in "fast" mode.

``Fp8Linear`` holds a weight quantized per output channel (absmax / 448) and quantizes its input
per token at run time; the product is one ``torch._scaled_mm`` with row-wise scales (Hopper's fp8
tensor cores, about 1.6x the bf16 GEMM rate at the DiT's shapes), bf16 out. ``quantize_dit``
swaps the big linears of every DiT block (self-attention q/k/v/o, cross-attention q/o, FFN) for
it in place; the face adapter, motion encoder, embeddings, cross-attention k/v over the 769
context tokens and the head stay in their precision (the issue's rule, and they are <3 % of the
FLOPs). LoRAs are merged before quantization, so they cost nothing per step.
"""
from __future__ import annotations

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0

FP8_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
               "cross_attn.q", "cross_attn.o", "ffn.0", "ffn.2")
"""Linears of each DiT block that the fast mode runs in fp8 (names inside a block)."""


def quantize_absmax(x: torch.Tensor, dim: int | tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax e4m3 quantization over ``dim``: x -> (x8 e4m3, scale fp32 with ``dim`` kept as size 1),
    x ≈ x8 * scale. An all-zero slice gets scale 1."""
    amax = x.abs().amax(dim=dim, keepdim=True).float()
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise absmax quantization: x [M, K] -> (x8 [M, K] e4m3, scale [M, 1] fp32), x ≈ x8 * scale."""
    return quantize_absmax(x, -1)


class Fp8Linear(nn.Module):
    """y = x W^T + b with W in e4m3 (per-output-channel scale) and x quantized per token.

    weight [out, in] float8_e4m3fn · weight_scale [out] fp32 · bias [out] or None.
    forward: x [..., in] (any float dtype) -> [..., out] in ``out_dtype`` (the dtype of the
    layer it replaced: bf16 on GPU).
    """

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor,
                 bias: torch.Tensor | None, out_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.out_dtype = out_dtype
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.weight_scale = nn.Parameter(weight_scale.float(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.to(out_dtype), requires_grad=False)

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> Fp8Linear:
        """Quantize ``layer``'s weight per output channel (the bf16 weight can then be freed)."""
        with torch.no_grad():
            w8, scale = quantize_rows(layer.weight.detach())
        return cls(w8, scale.squeeze(1), None if layer.bias is None else layer.bias.detach(),
                   out_dtype=layer.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x8, sx = quantize_rows(x.reshape(-1, self.in_features))       # [M, K], [M, 1]
        if x8.device.type == "cuda":
            y = torch._scaled_mm(x8, self.weight.t(), scale_a=sx, scale_b=self.weight_scale[None, :],
                                 out_dtype=self.out_dtype)             # [M, out]
        else:   # CPU _scaled_mm has no row-wise scales in every torch: the same product in fp32
            w = self.weight.float() * self.weight_scale[:, None]
            y = ((x8.float() * sx) @ w.t()).to(self.out_dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8_e4m3"


def fp8_shape_ok(layer: nn.Linear) -> bool:
    """fp8 tensor-core GEMMs need both weight dims to be multiples of 16 (all of the 14B's are)."""
    return layer.in_features % 16 == 0 and layer.out_features % 16 == 0


def quantize_dit(dit: nn.Module) -> int:
    """Swap the ``FP8_LINEARS`` of every block of ``dit`` for :class:`Fp8Linear` in place.

    Returns the number of linears swapped (layers whose dims fp8 GEMMs cannot take stay as
    they are). Block by block, so the peak is one block's bf16 copy.
    """
    return sum(quantize_block(block) for block in dit.blocks)


def quantize_block(block: nn.Module) -> int:
    """Swap the ``FP8_LINEARS`` of one DiT block for :class:`Fp8Linear` (on the block's device)."""
    count = 0
    for name in FP8_LINEARS:
        layer = block.get_submodule(name)
        if isinstance(layer, Fp8Linear) or not fp8_shape_ok(layer):
            continue
        parent, _, child = name.rpartition(".")
        setattr(block.get_submodule(parent), child, Fp8Linear.from_linear(layer))  # "0" too (Sequential)
        count += 1
    return count
