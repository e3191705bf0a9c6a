"""The Animate model on a worker pool: state factory + job handlers (one per rank).

Placement (DESIGN.md §4): the DiT is sharded with FSDP2 per block (each rank reads only its
rows from the safetensors files) and runs Ulysses sequence parallel; its ~0.3 B parameters
outside the blocks stay replicated. VAE, CLIP and umT5 live on rank 0 only: rank 0 computes a
clip's conditioning once (VAE encodes, CLIP, text, motion tokens), broadcasts it, every rank
denoises its slice of the tokens, and rank 0 decodes. So no rank repeats another's VAE/CLIP/T5
or motion-encoder work, and ranks > 0 need no memory for those networks.

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
import torch.distributed as dist

from wan_animate.checkpoints import layout
from wan_animate.distributed.loading import SafetensorsSource, load_local_shards, local_rows
from wan_animate.distributed.mesh import build_mesh
from wan_animate.distributed.parallelize import ParallelConfig, parallelize_dit
from wan_animate.distributed.worker import JobContext, WorkerEnv
from wan_animate.errors import InputError
from wan_animate.models.attention import LocalAttention
from wan_animate.models.config import DiTConfig
from wan_animate.models.dit import AnimateDiT
from wan_animate.models.lora import LoraPair, normalize_lora_state
from wan_animate.placement import Placement, encoder_devices, park_encoders, precision
from wan_animate.sampling.clip_job import ClipJob


@dataclass(frozen=True)
class PoolModelConfig:
    """What every worker loads (picklable, compared for pool reuse)."""

    ckpt_dir: str
    placement: Placement
    use_relighting_lora: bool = False
    loras: tuple[tuple[str, float], ...] = ()
    comfy_files: tuple[str, str, str, str] | None = None
    """ComfyUI single files (dit, t5, clip, vae) instead of ``ckpt_dir``."""
    tokenizer_dir: str | None = None
    relight_file: str | None = None


def layout_for(world: int, heads: int) -> tuple[int, int]:
    """(halves, sp) of the pool mesh.

    An even pool whose half splits the heads gets two halves (CFG parallel: conditional and
    unconditional pass side by side) with Ulysses over each half; otherwise one group with
    Ulysses over the whole pool (which must then split the heads).
    """
    if world % 2 == 0 and heads % (world // 2) == 0:
        return 2, world // 2
    if heads % world == 0:
        return 1, world
    raise InputError(f"a pool of {world} cannot split {heads} heads; use a pool size that "
                     f"divides {heads}")


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


@dataclass
class WorkerState:
    """Per-rank state: the sharded DiT; rank 0 also holds VAE, CLIP, umT5 and the tokenizer."""

    env: WorkerEnv
    bundle: Any  # ModelBundle on rank 0, None elsewhere
    dit: AnimateDiT


def load_state(env: WorkerEnv, config: PoolModelConfig) -> WorkerState:
    """State factory of the pool (runs once per worker)."""
    from wan_animate.checkpoints.load import read_pth
    from wan_animate.checkpoints.official import load_bundle

    folder = Path(config.ckpt_dir)
    pl = config.placement
    p = precision(pl)
    if config.comfy_files is not None:
        return _load_comfy_state(env, config, p)
    dit = build_sharded_dit(env, folder, pl)
    if config.use_relighting_lora:
        path = folder / layout.RELIGHT_LORA_FILE
        state = read_pth(path, wrapper_keys=(layout.RELIGHT_LORA_WRAPPER_KEY,))
        merge_lora_local(dit, normalize_lora_state(state, str(path)))
    merge_user_loras_local(dit, config.loras)
    finish_dit(dit, pl, env)
    return _with_rank0_bundle(env, dit, pl, lambda: load_bundle(
        folder, env.device, p, with_dit=False, **encoder_devices(pl, env.device)))


def _with_rank0_bundle(env: WorkerEnv, dit: AnimateDiT, placement: Placement,
                       load: Callable[[], Any]) -> WorkerState:
    """The worker state: rank 0 also loads VAE, CLIP and umT5 (``load``) around the shared DiT
    and parks the encoders the placement parks."""
    bundle = None
    if env.rank == 0:
        bundle = park_encoders(load(), placement)
        bundle.dit = dit
    return WorkerState(env, bundle, dit)


def _load_comfy_state(env: WorkerEnv, config: PoolModelConfig, p: Any) -> WorkerState:
    """:func:`load_state` from ComfyUI single files: each rank reads its rows of the DiT file
    (official key names, fp8 rows dequantized); rank 0 loads VAE, CLIP and umT5 from theirs."""
    from wan_animate.checkpoints.comfy_bundle import (ComfyFiles, SingleFileDiTSource, dit_config,
                                                      load_comfy_bundle, lora_list)

    pl = config.placement
    files = ComfyFiles(*config.comfy_files, tokenizer=config.tokenizer_dir)
    source = SingleFileDiTSource(files.dit, p.dit)
    dit = build_sharded_dit(env, Path(files.dit), pl, cfg=dit_config(files.dit), source=source)
    merge_user_loras_local(dit, lora_list(config.use_relighting_lora, config.relight_file, config.loras))
    finish_dit(dit, pl, env)
    return _with_rank0_bundle(env, dit, pl, lambda: load_comfy_bundle(
        files, env.device, p, with_dit=False, **encoder_devices(pl, env.device)))


def _broadcast(obj: Any, env: WorkerEnv) -> Any:
    """rank 0's ``obj`` on every rank (pickled over the gloo control group, tensors on CPU)."""
    if env.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=env.control_group)
    return box[0]


def _select_layout(dit: AnimateDiT, guide: float) -> MeshCfg | None:
    """Set the job's token layout; returns the CFG-parallel exchange when it is used."""
    layouts = dit.pool_layouts
    if guide > 1 and layouts["halves_size"] == 2:
        dit.set_parallel(layouts["halves"])
        return MeshCfg(layouts["mesh"])
    dit.set_parallel(layouts.get("world", layouts["halves"]))
    return None


def _denoise_everywhere(state: WorkerState, ctx: JobContext, job: ClipJob) -> torch.Tensor:
    """Every rank: denoise ``job``'s clip on this rank's tokens; the clean latent [1, 16, F, h, w]."""
    from wan_animate.sampling.denoise import denoise_clip
    from wan_animate.sampling.solvers import make_solver

    job = job.to(state.env.device)
    solver = make_solver(job.solver, job.steps, job.shift)
    cfg_par = _select_layout(state.dit, job.guide)
    return denoise_clip(state.dit, solver, job.noise, job.video, job.clip, job.guide,
                        on_step=lambda s, n: ctx.step(job.index + 1, s, n, job.clips),
                        cancelled=ctx.cancel_before_step, cfg_parallel=cfg_par)


def generate_handler(state: WorkerState, payload: tuple, ctx: JobContext) -> Any:
    """Job "generate": (inputs, options) -> AnimateLatent on rank 0 (None elsewhere)."""
    from wan_animate.sampling.generate import generate_latent

    if ctx.rank != 0:
        while (job := _broadcast(None, state.env)) is not None:
            _denoise_everywhere(state, ctx, job)
        return None
    inputs, options = payload
    clips_total: list[int] = []
    in_denoise = [False]

    def denoise(dit, solver, noise, video, cond, guide, on_step=None, cancelled=None, trace=None):
        index = len(clips_total)
        clips_total.append(index)
        job = ClipJob(index=index, clips=clips_count[0], solver=options.solver, steps=options.steps,
                      shift=options.shift, guide=guide, noise=noise, video=video, clip=cond)
        _broadcast(job.to("cpu") if state.env.world_size > 1 else job, state.env)  # pickled on CPU
        in_denoise[0] = True
        out = _denoise_everywhere(state, ctx, job)
        in_denoise[0] = False
        return out

    from wan_animate.preprocess.clip_plan import plan_clips

    clips_count = [len(plan_clips(inputs.num_frames, options.frame_num, options.refert_num,
                                  int(inputs.face.shape[0])).clips)]
    try:
        latent = generate_latent(state.bundle, inputs, options, denoise=denoise)
    except BaseException:
        # Inside a denoising loop the ranks stop together (agreed cancel / abort); outside it
        # the other ranks wait for the next clip: release them.
        if not in_denoise[0]:
            _broadcast(None, state.env)
        raise
    _broadcast(None, state.env)
    return latent


def decode_handler(state: WorkerState, payload: Any, ctx: JobContext) -> Any:
    """Job "decode": AnimateLatent -> video [3, N, H, W] on rank 0 (the VAE lives there)."""
    from wan_animate.sampling.generate import decode_latent

    if ctx.rank != 0:
        return None
    runner = state.dit.block_runner
    if runner is not None and state.env.device.type == "cuda":
        # a block-swapped DiT on one GPU (a small card) leaves it while the VAE decodes
        from wan_animate.models.offload import parked_on_host

        with parked_on_host(state.dit, runner):
            return decode_latent(state.bundle.vae, payload)
    return decode_latent(state.bundle.vae, payload)
