"""FlashAttention-3 kernels for Hopper (sm_90): exact bf16 attention and fp8 (e4m3) attention.

FA3 is an optional package (``flash_attn_3``, Python module ``flash_attn_interface``; build or
install notes in the README). When it is importable and the GPU is a Hopper, ``attention="auto"``
uses it for the DiT's self-attention (faster than torch's cuDNN SDPA at the DiT's 32k-76k tokens,
bench/README.md); otherwise torch's SDPA is used. Both take and return the DiT's own layout
[B, L, N, D], so no transposes are made.

fp8 attention (the opt-in "fast" mode) quantizes q, k, v per (batch, head) to e4m3 with an
absmax scale (``quantize_heads``) and hands the inverse scales to the kernel ("descale").
``fp8_attention_reference`` computes the same function with torch ops on any device: the CPU
tests and the device check compare against it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wan_animate.models.fp8 import E4M3, E4M3_MAX, quantize_absmax

FA3_HEAD_DIMS = (128,)
"""Head dims "auto" sends to FA3: Wan's 128, the one ``bench/build_fa3.sh`` compiles (a full FA3
build has more; ask for "fa3" explicitly to use them)."""


_FLASH_ATTN_FUNC = None
"""``flash_attn_interface.flash_attn_func`` once imported (a plain global: the compiled DiT
blocks read it without tracing an import or a cache)."""
_IMPORT_ERROR: str | None = None


def fa3_installed() -> bool:
    """True when the FA3 package imports in this process (tried once)."""
    global _FLASH_ATTN_FUNC, _IMPORT_ERROR
    if _FLASH_ATTN_FUNC is None and _IMPORT_ERROR is None:
        try:
            from flash_attn_interface import flash_attn_func
        except Exception as e:  # noqa: BLE001 - not installed, or built for another torch/CUDA
            _IMPORT_ERROR = f"{type(e).__name__}: {e}"
        else:
            _FLASH_ATTN_FUNC = flash_attn_func
    return _FLASH_ATTN_FUNC is not None


def fa3_supported(device: torch.device | str) -> bool:
    """True when FA3 is installed and ``device`` is a CUDA GPU of compute capability 9.x."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available() or not fa3_installed():
        return False
    return torch.cuda.get_device_capability(device)[0] == 9


def require_fa3(device: torch.device | str) -> None:
    """Raise a clear error when FA3 cannot run on ``device``."""
    if not fa3_installed():
        raise RuntimeError(f"attention 'fa3' needs the FlashAttention-3 package (module "
                           f"flash_attn_interface: {_IMPORT_ERROR}); build it as the README's "
                           f"'Faster attention' says, or use attention 'auto'/'cudnn'")
    if not fa3_supported(device):
        raise RuntimeError(f"attention 'fa3' runs on Hopper GPUs (H100/H200, sm_90) only; {device} "
                           f"is not one: use attention 'auto' or 'cudnn'")


def fa3_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exact softmax(q k^T / sqrt(D)) v with FA3.

    q [B, Lq, N, D], k/v [B, Lk, N, D], bf16 or fp16, contiguous in the last dim -> [B, Lq, N, D].
    """
    out = _FLASH_ATTN_FUNC(q, k, v)
    return out[0] if isinstance(out, tuple) else out


def quantize_heads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(batch, head) absmax quantization to e4m3.

    x [B, L, N, D] (any float dtype) -> (x8 [B, L, N, D] float8_e4m3fn, descale [B, N] fp32) with
    x ≈ x8 * descale[:, None, :, None]. An all-zero head gets descale 1.
    """
    x8, descale = quantize_absmax(x, (1, 3))                       # descale [B, 1, N, 1]
    return x8, descale[:, 0, :, 0]


def fa3_attention_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """fp8 attention with FA3: q, k, v quantized per head (``quantize_heads``), bf16 output.

    q [B, Lq, N, D], k/v [B, Lk, N, D] -> [B, Lq, N, D] bf16.
    """
    (q8, qs), (k8, ks), (v8, vs) = (quantize_heads(t) for t in (q, k, v))
    out = _FLASH_ATTN_FUNC(q8, k8, v8, q_descale=qs, k_descale=ks, v_descale=vs)
    out = out[0] if isinstance(out, tuple) else out
    return out.to(torch.bfloat16)


def fp8_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """What ``fa3_attention_fp8`` computes, with torch ops on any device (fp32 softmax).

    q [B, Lq, N, D], k/v [B, Lk, N, D] -> [B, Lq, N, D] fp32. FA3 also rounds the softmax
    probabilities to e4m3 before the P·V product; that rounding is reproduced here.
    """
    deq = []
    for t in (q, k, v):
        x8, s = quantize_heads(t)
        deq.append((x8.float() * s[:, None, :, None]).transpose(1, 2))    # [B, N, L, D]
    qf, kf, vf = deq
    scores = (qf @ kf.transpose(-1, -2)) / qf.shape[-1] ** 0.5          # [B, N, Lq, Lk]
    m = scores.amax(-1, keepdim=True)
    p = torch.exp(scores - m)
    denom = p.sum(-1, keepdim=True)
    p8 = p.to(E4M3).float()                        # probabilities in [0, 1], rounded to e4m3
    out = (p8 @ vf) / denom
    return out.transpose(1, 2)


def sdpa_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """fp32 SDPA on [B, L, N, D] inputs -> [B, Lq, N, D] fp32 (the exact reference)."""
    out = F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v)))
    return out.transpose(1, 2)
