"""The one place that parallelizes a model: sequence-parallel layout, then FSDP2 per block.

Order (on a model built under ``torch.device("meta")``, every rank the same):

1. ``parallelize_dit(model, mesh, cfg)``: validates heads against the SP size, gives the model
   its :class:`SequenceParallel` layout (``model.set_parallel``), freezes the parameters
   (inference: FSDP2 then accepts mixed fp32/bf16 parameters in one unit), and calls
   ``fully_shard`` on every block of ``model.blocks``, every ``model.face_adapter.fuser_blocks``
   block, then the root (everything else: embeddings, head, face/motion encoders).
2. ``model.to_empty(device=env.device)`` and
   :func:`wan_animate.distributed.loading.load_local_shards`: each rank reads only the rows of
   its own shards from the checkpoint files.

What the model must do for FSDP2: call blocks through ``module(...)`` (never ``.forward``),
touch a block's parameters only inside that block's forward, and run the root forward via
``model(...)``. Under CFG parallel both halves must run the same sequence of forwards.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

from wan_animate.distributed.mesh import Axis, ParallelMesh
from wan_animate.distributed.ulysses import UlyssesSequenceParallel, check_heads
from wan_animate.errors import ParallelConfigError
from wan_animate.models.attention import AttentionBackend, LocalAttention, NoSequenceParallel


@dataclass(frozen=True)
class ParallelConfig:
    """How a model is laid out over a pool.

    Attributes:
        world_size: ranks in the pool (one per device).
        sp_size: Ulysses sequence-parallel degree; default ``world_size / cfg_size``.
        fsdp: shard parameters with FSDP2 (False: every rank holds a full copy).
        cfg_parallel: run conditional / unconditional passes on the two halves of the pool
            (needs an even ``world_size``).
        param_dtype: FSDP2 all-gather/compute dtype of parameters; None keeps each
            parameter's stored dtype (fp32 islands stay fp32).
        reduce_dtype: FSDP2 gradient reduce dtype (unused for inference; kept for training).
        reshard_after_forward: free gathered parameters after each unit's forward (the memory
            saving of FSDP; False keeps them gathered between steps).
    """

    world_size: int = 1
    sp_size: int | None = None
    fsdp: bool = True
    cfg_parallel: bool = False
    param_dtype: torch.dtype | None = None
    reduce_dtype: torch.dtype | None = None
    reshard_after_forward: bool = True

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ParallelConfigError(f"world_size must be >= 1, got {self.world_size}")
        if self.cfg_parallel and self.world_size % 2:
            raise ParallelConfigError(
                f"CFG parallel runs the conditional and unconditional passes on two halves of the "
                f"pool, so it needs an even pool size; got {self.world_size}")
        sp = self.world_size // self.cfg_size if self.sp_size is None else self.sp_size
        if sp < 1 or sp * self.cfg_size != self.world_size:
            raise ParallelConfigError(
                f"sp_size {sp} x cfg {self.cfg_size} = {sp * self.cfg_size} ranks does not match "
                f"world_size {self.world_size}; use sp_size = {self.world_size // self.cfg_size}")
        object.__setattr__(self, "sp_size", sp)

    @property
    def cfg_size(self) -> int:
        """Size of the CFG axis: 2 with CFG parallel, else 1."""
        return 2 if self.cfg_parallel else 1

    def check_heads(self, num_heads: int) -> None:
        """Raise :class:`ParallelConfigError` (listing valid sizes) unless sp_size divides heads."""
        check_heads(num_heads, self.sp_size)

    @property
    def mp_policy(self) -> MixedPrecisionPolicy:
        return MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=self.reduce_dtype)


def _check_mesh(mesh: ParallelMesh, cfg: ParallelConfig) -> None:
    got = (mesh.size(Axis.CFG), mesh.size(Axis.SP), mesh.size(Axis.FSDP))
    want = (cfg.cfg_size, cfg.sp_size, cfg.world_size)
    if got != want:
        raise ParallelConfigError(f"mesh (cfg, sp, fsdp) = {got} does not match the parallel "
                                  f"config {want}")


def _num_heads(model: nn.Module) -> int | None:
    """The self-attention head count of a DiT (``model.num_heads`` or ``model.config.num_heads``)."""
    for owner in (model, getattr(model, "config", None)):
        heads = getattr(owner, "num_heads", None)
        if isinstance(heads, int):
            return heads
    return None


def shard_units(root: nn.Module, units: Iterable[nn.Module], mesh: ParallelMesh,
                cfg: ParallelConfig, shard_root: bool = True,
                host_units: Iterable[nn.Module] = ()) -> nn.Module:
    """``fully_shard`` each unit (a repeated block), then ``root`` for the remaining parameters.

    Parameters are frozen first (inference only), which lets one unit hold parameters of
    several dtypes. Works on a meta-device model; materialize with ``to_empty`` afterwards.
    ``host_units`` (some of ``units``) keep their shards in host memory (pinned on CUDA) and
    copy them to the device before each all-gather (FSDP2's CPU offload: block swap on a pool).
    """
    root.requires_grad_(False)
    kwargs = dict(mesh=mesh[Axis.FSDP], mp_policy=cfg.mp_policy,
                  reshard_after_forward=cfg.reshard_after_forward)
    on_host = {id(u) for u in host_units}
    pin = mesh[Axis.FSDP].device_type == "cuda"
    for unit in units:
        if id(unit) in on_host:
            fully_shard(unit, offload_policy=CPUOffloadPolicy(pin_memory=pin), **kwargs)
        else:
            fully_shard(unit, **kwargs)
    if shard_root:
        fully_shard(root, **kwargs)
    return root


def dit_units(model: nn.Module) -> list[nn.Module]:
    """The FSDP units of the DiT: ``model.blocks`` and ``model.face_adapter.fuser_blocks``."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no nn.ModuleList `blocks` to shard")
    units = list(blocks)
    fuser = getattr(getattr(model, "face_adapter", None), "fuser_blocks", None)
    if isinstance(fuser, nn.ModuleList):
        units += list(fuser)
    return units


def parallelize_dit(model: nn.Module, mesh: ParallelMesh, cfg: ParallelConfig,
                    *, attention: AttentionBackend | None = None,
                    shard_root: bool = True,
                    host_units: Iterable[nn.Module] = ()) -> nn.Module:
    """Apply the pool's layout to a DiT in place: SP attention, then FSDP2 per block, then root.

    Args:
        model: the DiT (``set_parallel``, ``blocks``, optional ``face_adapter.fuser_blocks``),
            typically still on the meta device.
        mesh: from :func:`wan_animate.distributed.mesh.build_mesh`.
        cfg: must match the mesh sizes.
        attention: the per-rank attention backend (default :class:`LocalAttention`); with
            sp_size > 1 it is wrapped in Ulysses all-to-alls.
        shard_root: also shard the parameters outside the units. The Animate DiT keeps them
            replicated (about 0.3 B parameters: embeddings, head, motion/face encoders) so the
            per-clip encoders (``encode_motion``, ``embed_context``) run on any rank alone.
        host_units: units whose shards live in host memory (:func:`shard_units`); needs fsdp.
    """
    _check_mesh(mesh, cfg)
    heads = _num_heads(model)
    if heads is not None:
        cfg.check_heads(heads)
    inner = attention or LocalAttention()
    sp = UlyssesSequenceParallel(mesh[Axis.SP], inner) if cfg.sp_size > 1 else NoSequenceParallel(inner)
    model.set_parallel(sp)
    host_units = list(host_units)
    if host_units and not cfg.fsdp:
        raise ParallelConfigError("swapped blocks on a pool stream their FSDP2 shards from host "
                                  "memory: keep fsdp on, or set swap_blocks 0")
    if cfg.fsdp:
        shard_units(model, dit_units(model), mesh, cfg, shard_root=shard_root,
                    host_units=host_units)
    else:
        model.requires_grad_(False)
    return model
