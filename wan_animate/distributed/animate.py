"""The Animate DiT on a worker pool: mesh layout, the sharded build, LoRA row merges.

Placement (DESIGN.md §4): the DiT is sharded with FSDP2 per block (each rank reads only its
rows from the safetensors files) and runs Ulysses sequence parallel; its ~0.3 B parameters
outside the blocks stay replicated. The jobs that run on it (state factory, generate, decode)
are in :mod:`wan_animate.sampling.jobs`.

An even pool is a (2 halves x sp) mesh: with guidance (CFG) each half runs one of the two
passes with Ulysses over its half (CFG parallel); without guidance Ulysses spans the whole pool
when it splits the heads, else both halves compute the same pass (e.g. 3 heads on 2 ranks).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wan_animate.checkpoints import layout
from wan_animate.distributed.loading import SafetensorsSource, load_local_shards, local_rows
from wan_animate.distributed.mesh import build_mesh
from wan_animate.distributed.parallelize import ParallelConfig, parallelize_dit
from wan_animate.distributed.worker import WorkerEnv
from wan_animate.models.attention import LocalAttention
from wan_animate.models.config import DiTConfig, check_head_split
from wan_animate.models.dit import AnimateDiT
from wan_animate.models.lora import LoraPair
from wan_animate.placement import Placement, precision


def layout_for(world: int, heads: int) -> tuple[int, int]:
    """(halves, sp) of the pool mesh.

    An even pool whose half splits the heads gets two halves (CFG parallel: conditional and
    unconditional pass side by side) with Ulysses over each half; otherwise one group with
    Ulysses over the whole pool (which must then split the heads).
    """
    if world % 2 == 0 and heads % (world // 2) == 0:
        return 2, world // 2
    check_head_split(heads, world)
    return 1, world


@dataclass
class MeshCfg:
    """:class:`~wan_animate.sampling.denoise.CfgParallel` over the pool mesh's CFG axis."""

    mesh: Any

    @property
    def rank(self) -> int:
        return self.mesh.cfg_rank

    def exchange(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mesh.cfg_pair(v)


def build_sharded_dit(env: WorkerEnv, folder: Path, placement: Placement,
                      cfg: DiTConfig | None = None, source: Any = None) -> AnimateDiT:
    """The DiT on this rank: :func:`place_dit`, then only this rank's rows from the files
    (LoRAs are merged by the caller, then :func:`finish_dit`)."""
    cfg = cfg or DiTConfig.from_json(folder / layout.DIT_CONFIG)
    model = place_dit(env, cfg, placement)
    source = source or SafetensorsSource.from_index(folder, layout.DIT_INDEX)
    load_local_shards(model, source, str(folder), ignore_missing=layout.is_rebuildable_dit_key)
    return model.eval()


def place_dit(env: WorkerEnv, cfg: DiTConfig, placement: Placement) -> AnimateDiT:
    """The DiT laid out on this rank by ``placement``, weights not yet loaded (uninitialized).

    The one placement of every pool size, 1 included (the one-GPU path is a pool of one in
    ComfyUI's process): meta build -> compile of each block's forward (before ``fully_shard``,
    torchtitan's order, so FSDP's hooks stay outside the graphs) -> on several ranks Ulysses +
    FSDP2 per block, the last ``swap_blocks`` blocks with CPU offload (their shards in pinned
    host memory, copied in before each all-gather) -> ``to_empty``. On one rank a swapped DiT
    is materialized on the CPU and :func:`finish_dit` streams its blocks (``BlockSwap``).
    """
    from wan_animate.distributed.mesh import Axis
    from wan_animate.distributed.ulysses import UlyssesSequenceParallel
    from wan_animate.models.attention import NoSequenceParallel
    from wan_animate.models.optimize import compile_blocks

    dtype = precision(placement).dit
    with torch.device("meta"):
        model = AnimateDiT(cfg).to(dtype)
    backend = "fa3_fp8" if placement.fp8 and placement.attention == "auto" else placement.attention
    inner = LocalAttention(backend=backend, device=env.device, dtype=dtype, head_dim=cfg.head_dim)
    if placement.compile:
        compile_blocks(model)
    n, swap = len(model.blocks), placement.swap_blocks
    if env.world_size == 1:
        model.requires_grad_(False)
        model.set_parallel(NoSequenceParallel(inner))
        model.pool_layouts = {"halves": model.parallel, "mesh": None, "halves_size": 1}
        model.to_empty(device="cpu" if swap else env.device)
        return model
    halves, sp = layout_for(env.world_size, cfg.num_heads)
    mesh = build_mesh(env.device.type, cfg=halves, sp=sp)
    pcfg = ParallelConfig(world_size=env.world_size, sp_size=sp, cfg_parallel=halves == 2,
                          fsdp=placement.dit_sharded)
    parallelize_dit(model, mesh, pcfg, attention=inner, shard_root=False,
                    host_units=[model.blocks[i] for i in range(n - swap, n)])
    # layouts per job: halves (CFG parallel) or, when the whole pool splits the heads, all ranks
    model.pool_layouts = {"halves": model.parallel, "mesh": mesh, "halves_size": halves}
    if halves == 2 and cfg.num_heads % env.world_size == 0:
        model.pool_layouts["world"] = UlyssesSequenceParallel(mesh[Axis.FSDP], inner)
    # swapped blocks are materialized on the host (FSDP2 pins them), the rest on the device:
    # block by block, so no swapped shard ever takes GPU memory
    for i, block in enumerate(model.blocks):
        block.to_empty(device="cpu" if i >= n - swap else env.device)
    for name, child in model.named_children():
        if name != "blocks":
            child.to_empty(device=env.device)
    model.to_empty(device=env.device, recurse=False)
    return model


def finish_dit(model: AnimateDiT, placement: Placement, env: WorkerEnv) -> AnimateDiT:
    """After the weights (and LoRAs) are in: on one rank, stream the swapped blocks from pinned
    host memory (``BlockSwap``; fp8 blocks quantized on the GPU on their way) or quantize the
    resident DiT to fp8 (fast mode). Several ranks need nothing more (FSDP2 offloads)."""
    if env.world_size > 1:
        return model
    if placement.swap_blocks:
        from wan_animate.models.offload import place_with_swap

        model.set_block_runner(place_with_swap(model, placement.swap_blocks, env.device,
                                               fp8=placement.fp8))
    elif placement.fp8:
        from wan_animate.models.fp8 import quantize_dit

        quantize_dit(model)
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
    return model


def _add_to_local_rows(w: torch.Tensor, rows_delta: Callable[[int, int], torch.Tensor]) -> None:
    """w += delta on this rank's rows of ``w`` (a DTensor shard, or the whole tensor).

    ``rows_delta(start, stop)`` returns rows [start, stop) of the full-shape delta in fp32.
    """
    from torch.distributed.tensor import DTensor

    if isinstance(w, DTensor):
        local = w.to_local()
        start, stop = local_rows(w)
    else:
        local, start, stop = w, 0, w.shape[0]
    delta = rows_delta(start, stop).to(local.device)
    local.copy_((local.float() + delta).to(local.dtype))


@torch.no_grad()
def merge_lora_local(model: AnimateDiT, pairs: list[LoraPair]) -> int:
    """Merge LoRA pairs into this rank's rows of FSDP-sharded (or whole) Linear weights."""
    modules = dict(model.named_modules())
    for p in pairs:
        _add_to_local_rows(modules[p.module].weight,
                           lambda r0, r1, p=p: (p.b[r0:r1].float() @ p.a.float()) * p.scale)
    return len(pairs)


@torch.no_grad()
def merge_user_loras_local(model: AnimateDiT, loras: tuple[tuple[str, float], ...]) -> None:
    """Merge LoRA files (any supported format, with strengths) into this rank's rows."""
    from wan_animate.checkpoints.lora_formats import read_lora

    params = dict(model.named_parameters())
    for path, strength in loras:
        lf = read_lora(path, params.keys())
        deltas = {m + ".weight": lf.delta(m, tuple(params[m + ".weight"].shape)) for m in lf.modules}
        deltas.update({k: d.float().reshape(params[k].shape) for k, d in lf.diffs.items()})
        for key, delta in deltas.items():
            _add_to_local_rows(params[key], lambda r0, r1, d=delta: float(strength) * d[r0:r1].float())
