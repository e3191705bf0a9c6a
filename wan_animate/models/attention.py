"""Attention math as backend objects, and the sequence-parallel seam of the DiT.

The DiT owns its weights; *how* attention is computed and *how* the token sequence is split
across ranks is given from outside (``model.set_parallel(...)``), never by rewriting
``forward``. A pool of one uses :class:`NoSequenceParallel` and :class:`LocalAttention`.

Shapes: B batch, L tokens (Lq queries, Lk keys), N heads, D head dim.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class AttentionBackend(Protocol):
    """``(q, k, v, k_len) -> out``: q [B, Lq, N, D], k/v [B, Lk, N, D] -> [B, Lq, N, D].

    ``k_len``: number of valid keys (keys ``>= k_len`` are padding and masked), or None.
    The softmax scale is ``1/sqrt(D)``.
    """

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 k_len: int | None = None) -> torch.Tensor: ...


SDPA_BACKENDS = ("sdpa", "cudnn", "flash", "efficient", "math")
BACKENDS = ("auto", *SDPA_BACKENDS, "fa3", "fa3_fp8")
"""SDPA kernels, FlashAttention-3 (exact, bf16) and FlashAttention-3 fp8 (fast mode)."""


def _sdpa_context(backend: str, device: torch.device):  # noqa: ANN202 - context manager
    """The ``sdpa_kernel`` context for ``backend`` (a no-op for "auto" off CUDA)."""
    from contextlib import nullcontext

    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    if backend in ("auto", "sdpa"):
        # cuDNN attention is the fastest exact kernel on Hopper (568 vs 357 TFLOP/s flash, facts §11)
        order = [table["cudnn"], table["flash"], table["efficient"], table["math"]]
        try:
            return sdpa_kernel(order, set_priority=True)
        except TypeError:  # older torch without set_priority
            return sdpa_kernel(order)
    return sdpa_kernel([table[backend]])


class LocalAttention:
    """Single-device attention: FlashAttention-3 or torch's ``scaled_dot_product_attention``.

    ``compute_dtype``: inputs are cast to it when given (the official CUDA path runs attention
    in bf16); the output has the dtype of ``q``. ``backend``: "auto" = FA3 on a Hopper GPU when
    the package is installed (the fastest exact kernel there), else SDPA preferring cuDNN, then
    flash; "fa3" / an SDPA kernel name forces one; "fa3_fp8" is the fast mode's fp8 attention
    (FA3 e4m3, per-head scales; falls back to "auto" where FA3 cannot run). Padded keys
    (``k_len`` < Lk) are padding at the end of the sequence, so they are sliced off instead of
    masked: same result, and every fused kernel stays eligible.
    """

    def __init__(self, compute_dtype: torch.dtype | None = None, backend: str = "auto",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 head_dim: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
        self.compute_dtype = compute_dtype
        self.backend = backend
        self.kernel: str | None = None
        """The kernel chosen once for ``device``/``dtype`` (given): no per-call lookup, which
        keeps the call traceable by ``torch.compile``."""
        if device is not None:
            self.kernel = self.choose(torch.device(device), compute_dtype or dtype or torch.bfloat16,
                                      head_dim)

    def choose(self, device: torch.device, dtype: torch.dtype, head_dim: int | None = None) -> str:
        """The kernel for inputs of ``dtype`` and ``head_dim`` (None: not known yet) on ``device``:
        "fa3", "fa3_fp8" or an SDPA name. "auto" takes FA3 only at the head dims of
        ``flash3.FA3_HEAD_DIMS`` (the ones the pack's FA3 build compiles)."""
        from wan_animate.models import flash3

        if self.backend == "fa3":
            flash3.require_fa3(device)
            return "fa3"
        if self.backend in ("auto", "fa3_fp8") and dtype in (torch.bfloat16, torch.float16) \
                and head_dim in flash3.FA3_HEAD_DIMS and flash3.fa3_supported(device):
            return "fa3_fp8" if self.backend == "fa3_fp8" else "fa3"
        return "sdpa" if self.backend in ("auto", "fa3_fp8") else self.backend

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 k_len: int | None = None) -> torch.Tensor:
        out_dtype = q.dtype
        if self.compute_dtype is not None:
            q, k, v = (t.to(self.compute_dtype) for t in (q, k, v))
        if k_len is not None and k_len < k.shape[1]:
            # NOTE: padded keys dropped; padded queries still attend (as the official code).
            k, v = k[:, :k_len], v[:, :k_len]
        kernel = self.kernel or self.choose(q.device, q.dtype, q.shape[-1])
        if kernel in ("fa3", "fa3_fp8"):
            from wan_animate.models import flash3

            fn = flash3.fa3_attention if kernel == "fa3" else flash3.fa3_attention_fp8
            return fn(q.contiguous(), k.contiguous(), v.contiguous()).to(out_dtype)
        with _sdpa_context(kernel, q.device):
            # [B, L, N, D] -> [B, N, L, D]
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                 v.transpose(1, 2))
        return out.transpose(1, 2).to(out_dtype)  # [B, N, Lq, D] -> [B, Lq, N, D]


class SequenceParallel(Protocol):
    """How the DiT's token sequence is laid out across the ranks of a sequence-parallel group.

    ``shard`` pads a full sequence [B, L, ...] with zeros to a multiple of ``size`` and returns
    this rank's contiguous slice [B, Lp/size, ...]; ``gather`` is its inverse and trims to L.
    ``attention`` is the self-attention backend that sees the whole (padded) sequence.
    """

    size: int
    rank: int
    attention: AttentionBackend

    def padded_len(self, length: int) -> int: ...

    def local_range(self, length: int) -> tuple[int, int]: ...

    def shard(self, x: torch.Tensor) -> torch.Tensor: ...

    def gather(self, x: torch.Tensor, length: int) -> torch.Tensor: ...


class NoSequenceParallel:
    """The pool-of-one layout: the whole sequence on this rank."""

    size = 1
    rank = 0

    def __init__(self, attention: AttentionBackend | None = None) -> None:
        self.attention = attention or LocalAttention()

    def padded_len(self, length: int) -> int:
        return length

    def local_range(self, length: int) -> tuple[int, int]:
        return 0, length

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def gather(self, x: torch.Tensor, length: int) -> torch.Tensor:
        return x[:, :length]
