"""The VAE split over the pool by rows: every rank encodes / decodes one band of the frame.

Each rank of a process group holds the latent rows of one band (:class:`RowBands`: consecutive,
sizes differing by at most one, so any pool size and any height with at least one latent row
per rank) and runs the model's own encode / decode on them while a :class:`RowExchange` is
active (:func:`~wan_animate.models.vae_blocks.row_split`): before every spatial convolution the
neighbours swap boundary rows (point-to-point, one row per 3x3 conv), the mid-block attention
gathers every band's keys and values, and the causal temporal caches stay per rank. So the
result equals the unsplit VAE — no overlap, no blending. Rank 0 of the group sends each rank
its input rows and gathers the output.

Every rank must call :func:`split_encode` / :func:`split_decode` together (``x`` on the group's
rank 0, None elsewhere) with the same ``shape``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from wan_animate.models.vae_bands import RowBands
from wan_animate.models.vae_blocks import RowHalo, row_split


class RowExchange(RowHalo):
    """A :class:`RowHalo` of one band of a process group: halos from the neighbouring ranks.

    ``bands``: the latent rows of each group rank (``bands.parts`` == the group size).
    """

    def __init__(self, group: dist.ProcessGroup | None, bands: RowBands) -> None:
        self.group = group
        self.bands = bands
        self.rank = dist.get_rank(group)
        size = dist.get_world_size(group)
        if bands.parts != size:
            raise ValueError(f"{bands.parts} bands for a group of {size} ranks")
        self.above = self._peer(self.rank - 1)
        self.below = self._peer(self.rank + 1)

    def _peer(self, r: int) -> int | None:
        return _global(self.group, r) if 0 <= r < self.bands.parts else None

    def pad(self, x: torch.Tensor, cols: tuple[int, int], rows: tuple[int, int],
            front: int = 0) -> torch.Tensor:
        out = super().pad(x, cols, rows, front)  # zeros: the frame's edges and the columns
        top, bottom = rows
        ops, recv = [], []
        h = x.shape[-2]
        if self.above is not None:
            if bottom:  # my first rows are the bottom halo of the band above
                ops.append(dist.P2POp(dist.isend, x[..., :bottom, :].contiguous(), self.above))
            if top:
                buf = x.new_empty(*x.shape[:-2], top, x.shape[-1])
                ops.append(dist.P2POp(dist.irecv, buf, self.above))
                recv.append((buf, slice(0, top)))
        if self.below is not None:
            if top:
                ops.append(dist.P2POp(dist.isend, x[..., h - top:, :].contiguous(), self.below))
            if bottom:
                buf = x.new_empty(*x.shape[:-2], bottom, x.shape[-1])
                ops.append(dist.P2POp(dist.irecv, buf, self.below))
                recv.append((buf, slice(top + h, top + h + bottom)))
        if ops:
            for work in dist.batch_isend_irecv(ops):
                work.wait()
        body = out[:, :, front:] if x.ndim == 5 else out
        for buf, where in recv:
            body[..., where, cols[0]:cols[0] + x.shape[-1]] = buf
        return out

    def all_rows(self, x: torch.Tensor) -> torch.Tensor:
        mine = self.bands.sizes[self.rank]
        scale = x.shape[-2] // mine
        sizes = [n * scale for n in self.bands.sizes]
        most = max(sizes)
        padded = F.pad(x, (0, 0, 0, most - x.shape[-2])).contiguous()
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p[..., :n, :] for p, n in zip(parts, sizes)], dim=-2)


def bands_for(rows: int, group: dist.ProcessGroup | None) -> RowBands | None:
    """The group's bands of a frame of ``rows`` latent rows, or None when the frame has fewer
    rows than the group has ranks (then the group's rank 0 runs the whole VAE alone)."""
    size = dist.get_world_size(group)
    return RowBands(rows, size) if rows >= size else None


def split_decode(vae: torch.nn.Module, z: torch.Tensor | None, shape: Sequence[int],
                 group: dist.ProcessGroup | None = None) -> torch.Tensor | None:
    """``vae.decode`` of the latent ``z`` [B, 16, F, h, w] (on group rank 0) over the group:
    the video [B, 3, 4F - 3, 8h, 8w] float32 on group rank 0, None elsewhere."""
    rank = dist.get_rank(group)
    bands = bands_for(int(shape[-2]), group)
    if bands is None:
        return vae.decode(z) if rank == 0 else None
    if rank != 0:
        z = torch.empty(*shape, dtype=torch.float32, device=vae.device)
    else:
        z = z.to(device=vae.device, dtype=torch.float32).contiguous()
    dist.broadcast(z, src=_global(group, 0), group=group)
    a, b = bands.bounds(rank)
    with row_split(RowExchange(group, bands)):
        mine = vae.decode(z[..., a:b, :])
    return _gather_rows(mine, bands, group, vae.config.spatial_factor)


def split_encode(vae: torch.nn.Module, video: torch.Tensor | None, shape: Sequence[int],
                 group: dist.ProcessGroup | None = None) -> torch.Tensor | None:
    """``vae.encode`` of ``video`` [B, 3, T, H, W] (on group rank 0, any device) over the group:
    the latent [B, 16, 1 + (T-1)//4, H/8, W/8] float32 on group rank 0, None elsewhere."""
    rank = dist.get_rank(group)
    sf = vae.config.spatial_factor
    bands = bands_for(int(shape[-2]) // sf, group)
    if bands is None:
        return vae.encode(video) if rank == 0 else None
    mine = _scatter_rows(video, shape, bands, group, sf, vae.device)
    with row_split(RowExchange(group, bands)):
        latent = vae.encode(mine)
    return _gather_rows(latent, bands, group, 1)


def _global(group: dist.ProcessGroup | None, r: int) -> int:
    return dist.get_global_rank(group, r) if group is not None else r


def _scatter_rows(video: torch.Tensor | None, shape: Sequence[int], bands: RowBands,
                  group: dist.ProcessGroup | None, scale: int, device: torch.device) -> torch.Tensor:
    """Group rank 0 sends each rank its band's rows (x ``scale`` pixel rows) of ``video``."""
    rank = dist.get_rank(group)
    a, b = bands.bounds(rank)
    if rank != 0:
        mine = torch.empty(*shape[:-2], (b - a) * scale, shape[-1], device=device)
        dist.recv(mine, src=_global(group, 0), group=group)
        return mine
    for r in range(1, bands.parts):
        ra, rb = bands.bounds(r)
        part = video[..., ra * scale:rb * scale, :].to(device=device, dtype=torch.float32)
        dist.send(part.contiguous(), dst=_global(group, r), group=group)
    return video[..., a * scale:b * scale, :]


def _gather_rows(mine: torch.Tensor, bands: RowBands, group: dist.ProcessGroup | None,
                 scale: int) -> torch.Tensor | None:
    """Every rank's band [..., rows x scale, W] -> the whole frame on group rank 0."""
    rank = dist.get_rank(group)
    if rank != 0:
        dist.send(mine.contiguous(), dst=_global(group, 0), group=group)
        return None
    full = mine.new_empty(*mine.shape[:-2], bands.rows * scale, mine.shape[-1])
    a, b = bands.bounds(0)
    full[..., a * scale:b * scale, :] = mine
    for r in range(1, bands.parts):
        ra, rb = bands.bounds(r)
        buf = mine.new_empty(*mine.shape[:-2], (rb - ra) * scale, mine.shape[-1])
        dist.recv(buf, src=_global(group, r), group=group)
        full[..., ra * scale:rb * scale, :] = buf
    return full


__all__ = ["RowExchange", "bands_for", "split_decode", "split_encode"]
