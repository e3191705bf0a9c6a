"""Ulysses sequence parallelism: the DiT's tokens split across ranks, attention split by heads.

Layout (P = group size, L real tokens, Lp = ceil(L / P) * P):

- ``shard(x)`` zero-pads the sequence [B, L, ...] to Lp and keeps this rank's contiguous slice
  [B, Lp/P, ...] (rank r holds global tokens ``[r*Lp/P, (r+1)*Lp/P)``).
- Self-attention (:class:`UlyssesAttention`): q/k/v [B, Lp/P, N, D] -> one all-to-all that
  scatters heads and gathers the sequence -> [B, Lp, N/P, D] -> the inner backend with
  ``k_len = L`` (padding keys masked) -> all-to-all back -> [B, Lp/P, N, D].
- ``gather(x_local, L)`` all-gathers the slices and trims the padding: [B, Lp/P, ...] -> [B, L, ...].
- ``local_range(L)`` is the range of *real* global tokens this rank holds; per-frame face
  attention runs on those tokens only (padding tokens are never part of a frame).

Only heads move between ranks, so any P that divides the head count works and the padding
path gives the pool-of-one result. Inference only: the collectives are not differentiable.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup
from torch.distributed.device_mesh import DeviceMesh

from wan_animate.distributed.mesh import all_gather_single
from wan_animate.models.attention import AttentionBackend, LocalAttention
from wan_animate.models.config import check_head_split, head_split_sizes


valid_sp_sizes = head_split_sizes   # every sequence-parallel size that divides the heads
check_heads = check_head_split      # (num_heads, sp_size): the one heads-vs-ranks check


def _as_group(group: ProcessGroup | DeviceMesh | None) -> ProcessGroup:
    if isinstance(group, DeviceMesh):
        if group.ndim != 1:
            raise ValueError(f"Ulysses needs a 1-D mesh, got {group.ndim}-D {group}")
        return group.get_group()
    return group if group is not None else dist.group.WORLD


@torch.compiler.disable
def _all_to_all(x: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Exchange equal dim-0 chunks: chunk j of ``x`` goes to rank j; out[j] came from rank j.

    Left out of compiled graphs (a graph break in a compiled block): the process-group call
    runs eagerly, the layout work around it is compiled."""
    x = x.contiguous()
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


class UlyssesAttention:
    """Self-attention over the whole sequence from sequence-sharded q/k/v (an AttentionBackend).

    ``(q, k, v, k_len) -> out``: q/k/v [B, Lc, N, D] with Lc = Lp/P this rank's slice of the padded
    sequence -> out [B, Lc, N, D]. ``k_len`` is the real (global, unpadded) token count; keys at
    global positions ``>= k_len`` are masked. q, k and v must have the same shape (self-attention).
    """

    def __init__(self, group: ProcessGroup, size: int, inner: AttentionBackend) -> None:
        self.group = group
        self.size = size
        self.inner = inner

    def _seq_from_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[S, B, Lc, N, D] (S stacked tensors) -> [S, B, P*Lc, N/P, D]."""
        s, b, lc, n, d = x.shape
        p = self.size
        # [S, B, Lc, N, D] -> [P, S, B, Lc, N/P, D]: head group j is sent to rank j.
        x = x.reshape(s, b, lc, p, n // p, d).permute(3, 0, 1, 2, 4, 5)
        x = _all_to_all(x, self.group)  # out[j] = rank j's tokens, my head group
        # [P, S, B, Lc, N/P, D] -> [S, B, P*Lc, N/P, D]
        return x.permute(1, 2, 0, 3, 4, 5).reshape(s, b, p * lc, n // p, d)

    def _heads_from_seq(self, x: torch.Tensor) -> torch.Tensor:
        """[B, P*Lc, N/P, D] -> [B, Lc, N, D] (inverse of :meth:`_seq_from_heads`)."""
        b, lp, hn, d = x.shape
        p = self.size
        # [B, P*Lc, N/P, D] -> [P, B, Lc, N/P, D]: token slice j goes back to rank j.
        x = x.reshape(b, p, lp // p, hn, d).permute(1, 0, 2, 3, 4)
        x = _all_to_all(x, self.group)  # out[j] = my tokens, rank j's head group
        # [P, B, Lc, N/P, D] -> [B, Lc, P*(N/P), D]
        return x.permute(1, 2, 0, 3, 4).reshape(b, lp // p, p * hn, d)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 k_len: int | None = None) -> torch.Tensor:
        if not (q.shape == k.shape == v.shape):
            raise ValueError(f"Ulysses self-attention needs q, k, v of one shape; got "
                             f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
        check_heads(q.shape[2], self.size)
        if q.dtype != k.dtype or q.dtype != v.dtype:
            raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
        # One all-to-all for q, k and v together: [3, B, Lc, N, D] -> [3, B, Lp, N/P, D].
        qkv = self._seq_from_heads(torch.stack((q, k, v)))
        out = self.inner(qkv[0], qkv[1], qkv[2], k_len=k_len)  # [B, Lp, N/P, D]
        return self._heads_from_seq(out)


class UlyssesSequenceParallel:
    """The :class:`~wan_animate.models.attention.SequenceParallel` layout over one process group.

    Args:
        group: the sequence-parallel process group, or a 1-D mesh (``mesh[Axis.SP]``).
        inner: the attention backend that computes attention on [B, Lp, N/P, D];
            default :class:`LocalAttention`.
    """

    def __init__(self, group: ProcessGroup | DeviceMesh | None,
                 inner: AttentionBackend | None = None) -> None:
        self.group = _as_group(group)
        self.size = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        self.attention = UlyssesAttention(self.group, self.size, inner or LocalAttention())

    def check_heads(self, num_heads: int) -> None:
        """Raise :class:`ParallelConfigError` (listing the valid sizes) if heads do not split."""
        check_heads(num_heads, self.size)

    def padded_len(self, length: int) -> int:
        """``length`` rounded up to a multiple of the group size."""
        return -(-length // self.size) * self.size

    def local_range(self, length: int) -> tuple[int, int]:
        """Global ``[start, end)`` of the real tokens in this rank's slice (``end - start`` may be
        smaller than the slice, or 0, where the slice holds padding). Local token ``i`` of the
        slice is global token ``start + i``."""
        chunk = self.padded_len(length) // self.size
        start = self.rank * chunk
        return min(start, length), min(start + chunk, length)

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, ...] -> [B, Lp/P, ...]: zero-pad to Lp, keep this rank's contiguous slice."""
        length = x.shape[1]
        lp = self.padded_len(length)
        chunk = lp // self.size
        if lp != length:
            pad = x.new_zeros((x.shape[0], lp - length, *x.shape[2:]))
            x = torch.cat((x, pad), dim=1)  # [B, L, ...] -> [B, Lp, ...]
        return x[:, self.rank * chunk:(self.rank + 1) * chunk].contiguous()

    def gather(self, x: torch.Tensor, length: int) -> torch.Tensor:
        """[B, Lp/P, ...] -> [B, L, ...]: all-gather every rank's slice, drop the padding."""
        chunk = x.shape[1]
        if chunk * self.size != self.padded_len(length):
            raise ValueError(f"gather: local slice of {chunk} tokens x {self.size} ranks does not "
                             f"match length {length} padded to {self.padded_len(length)}")
        x = x.contiguous()
        out = x.new_empty((self.size * x.shape[0], *x.shape[1:]))
        all_gather_single(out, x, group=self.group)  # [P*B, Lc, ...], rank-major
        # [P*B, Lc, ...] -> [P, B, Lc, ...] -> [B, P*Lc, ...]
        out = out.view(self.size, *x.shape).movedim(0, 1)
        out = out.reshape(x.shape[0], self.size * chunk, *x.shape[2:])
        return out[:, :length]
