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


SDPA_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")


def _sdpa_context(backend: str, device: torch.device):  # noqa: ANN202 - context manager
    """The ``sdpa_kernel`` context for ``backend`` (a no-op for "auto" off CUDA)."""
    from contextlib import nullcontext

    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    if backend == "auto":
        # cuDNN attention is the fastest exact kernel on Hopper (568 vs 357 TFLOP/s flash, facts §11)
        order = [table["cudnn"], table["flash"], table["efficient"], table["math"]]
        try:
            return sdpa_kernel(order, set_priority=True)
        except TypeError:  # older torch without set_priority
            return sdpa_kernel(order)
    return sdpa_kernel([table[backend]])


class LocalAttention:
    """Single-device attention through ``scaled_dot_product_attention``.

    ``compute_dtype``: inputs are cast to it when given (the official CUDA path runs attention
    in bf16); the output has the dtype of ``q``. ``backend``: SDPA kernel choice on CUDA
    ("auto" prefers cuDNN, then flash). Padded keys (``k_len`` < Lk) are padding at the end of
    the sequence, so they are sliced off instead of masked: same result, and every fused
    kernel stays eligible.
    """

    def __init__(self, compute_dtype: torch.dtype | None = None, backend: str = "auto") -> None:
        if backend not in SDPA_BACKENDS:
            raise ValueError(f"attention backend must be one of {SDPA_BACKENDS}, got {backend!r}")
        self.compute_dtype = compute_dtype
        self.backend = backend

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 k_len: int | None = None) -> torch.Tensor:
        out_dtype = q.dtype
        if self.compute_dtype is not None:
            q, k, v = (t.to(self.compute_dtype) for t in (q, k, v))
        if k_len is not None and k_len < k.shape[1]:
            # NOTE: padded keys dropped; padded queries still attend (as the official code).
            k, v = k[:, :k_len], v[:, :k_len]
        with _sdpa_context(self.backend, q.device):
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
