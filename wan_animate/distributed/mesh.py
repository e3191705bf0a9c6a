"""Device meshes named by role and the process-group backend.

A pool of ``world`` ranks is laid out as a 2-D mesh ``(cfg, sp)``:

- ``Axis.CFG`` (size 1 or 2): with CFG parallel the conditional and unconditional DiT passes run
  on the two halves of the pool at the same time.
- ``Axis.SP`` (size ``world / cfg``): the Ulysses sequence-parallel group of one half.
- ``Axis.FSDP`` (size ``world``): the flattened ``cfg x sp`` mesh; the DiT is sharded across
  every rank. Both CFG halves run the same sequence of DiT forwards (same shapes), so the
  FSDP all-gathers of both halves match.

A pool of one uses the same code with every axis of size 1. *Axis* names a mesh axis, *dim*
a tensor dimension.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

def all_gather_single(out: torch.Tensor, x: torch.Tensor, group: dist.ProcessGroup) -> None:
    """All-gather ``x`` of every rank into ``out`` ([P * N, ...], rank-major), in place.

    torch >= 2.13 names it ``all_gather_single`` (older: ``all_gather_into_tensor``, same
    semantics). Looked up at each call, so a wrapped ``torch.distributed`` (the bench's
    deterministic stand-ins for the fake process group) sees every gather.
    """
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, x, group=group)


class Axis(str, Enum):
    """Mesh axes by role."""

    CFG = "cfg"
    SP = "sp"
    FSDP = "fsdp"


def backend_for(device_type: str) -> str:
    """The collective backend of a device type: ``nccl`` on CUDA, ``gloo`` on CPU."""
    if device_type == "cuda":
        return "nccl"
    if device_type == "cpu":
        return "gloo"
    raise ValueError(f"unsupported device type {device_type!r}; expected 'cuda' or 'cpu'")


@dataclass(frozen=True)
class ParallelMesh:
    """The ``(cfg, sp)`` device mesh of a pool plus its flattened ``fsdp`` view.

    ``mesh[Axis.SP]`` / ``mesh[Axis.CFG]`` / ``mesh[Axis.FSDP]`` return 1-D meshes that contain
    this rank; ``mesh[axis].get_group()`` is the process group to pass to a collective.
    """

    root: DeviceMesh
    fsdp: DeviceMesh

    def __getitem__(self, axis: Axis | str) -> DeviceMesh:
        axis = Axis(axis)
        if axis is Axis.FSDP:
            return self.fsdp
        return self.root[axis.value]

    def size(self, axis: Axis | str) -> int:
        return self[axis].size()

    @property
    def device_type(self) -> str:
        return self.root.device_type

    @property
    def cfg_rank(self) -> int:
        """0 on the conditional half of the pool, 1 on the unconditional half."""
        return self[Axis.CFG].get_local_rank()

    def cfg_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CFG parallel exchange: each rank passes its half's prediction ``x`` (same shape on all
        ranks); every rank gets ``(cond, uncond)`` = (half 0's ``x``, half 1's ``x``)."""
        if self.size(Axis.CFG) != 2:
            raise ValueError(f"cfg_pair needs a CFG axis of size 2, got {self.size(Axis.CFG)}")
        x = x.contiguous()
        out = x.new_empty((2 * x.shape[0], *x.shape[1:]))
        all_gather_single(out, x, group=self[Axis.CFG].get_group())  # [2*B, ...], half-major
        cond, uncond = out.view(2, *x.shape).unbind(0)  # [2*B, ...] -> 2 x [B, ...]
        return cond, uncond


def build_mesh(device_type: str, *, cfg: int = 1, sp: int | None = None) -> ParallelMesh:
    """Create the pool's mesh; every rank of the default process group must call it.

    Args:
        device_type: ``"cuda"`` or ``"cpu"``.
        cfg: size of the CFG axis (1 or 2).
        sp: size of the SP axis; default ``world / cfg``. ``cfg * sp`` must equal the world size.
    """
    if not dist.is_initialized():
        raise RuntimeError("build_mesh needs an initialized default process group "
                           "(call it inside a pool worker or under torchrun)")
    world = dist.get_world_size()
    if cfg not in (1, 2):
        raise ValueError(f"cfg axis size must be 1 or 2, got {cfg}")
    sp = world // cfg if sp is None else sp
    if cfg * sp != world:
        raise ValueError(f"mesh cfg={cfg} x sp={sp} = {cfg * sp} ranks does not match the "
                         f"world size {world}")
    root = init_device_mesh(device_type, (cfg, sp), mesh_dim_names=(Axis.CFG.value, Axis.SP.value))
    # [cfg, sp] -> [cfg * sp]: one FSDP axis over every rank.
    fsdp = root[(Axis.CFG.value, Axis.SP.value)]._flatten(Axis.FSDP.value)
    return ParallelMesh(root=root, fsdp=fsdp)


def device_for(device_type: str, index: int) -> torch.device:
    """The torch device a rank computes on (``cuda:<index>`` or ``cpu``)."""
    return torch.device("cuda", index) if device_type == "cuda" else torch.device("cpu")
