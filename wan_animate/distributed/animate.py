"""The Animate model on a worker pool: state factory + job handlers (one per rank).

Placement (DESIGN.md §4): the DiT is sharded with FSDP2 per block (each rank reads only its
rows from the safetensors files) and runs Ulysses sequence parallel; its ~0.3 B parameters
outside the blocks stay replicated. VAE, CLIP and umT5 live on rank 0 only: rank 0 computes a
clip's conditioning once (VAE encodes, CLIP, text, motion tokens), broadcasts it, every rank
denoises its slice of the tokens, and rank 0 decodes. So no rank repeats another's VAE/CLIP/T5
or motion-encoder work, and ranks > 0 need no memory for those networks.

When the heads cannot be split over the whole pool (e.g. 3 heads on 2 ranks), the pool runs
Ulysses over the largest divisor and repeats the computation on the remaining replica axis.
"""
from __future__ import annotations

import math
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

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class PoolModelConfig:
    """What every worker loads (picklable, compared for pool reuse)."""

    ckpt_dir: str
    dtype: str = "auto"
    attention: str = "auto"
    use_relighting_lora: bool = False
    fsdp: bool = True


def layout_for(world: int, heads: int) -> tuple[int, int]:
    """(replicas, sp): Ulysses over the largest divisor of ``heads`` that divides ``world``."""
    sp = math.gcd(world, heads)
    replicas = world // sp
    if replicas not in (1, 2):
        raise InputError(f"a pool of {world} cannot split {heads} heads; use a pool size that "
                         f"divides {heads}")
    return replicas, sp


def build_sharded_dit(env: WorkerEnv, folder: Path, dtype: torch.dtype, attention: str,
                      fsdp: bool, cfg: DiTConfig | None = None,
                      source: Any = None) -> AnimateDiT:
    """The DiT on this rank: meta build -> Ulysses + FSDP2 -> to_empty -> local rows only."""
    cfg = cfg or DiTConfig.from_json(folder / layout.DIT_CONFIG)
    with torch.device("meta"):
        model = AnimateDiT(cfg).to(dtype)
    replicas, sp = layout_for(env.world_size, cfg.num_heads)
    mesh = build_mesh(env.device.type, cfg=replicas, sp=sp)
    pcfg = ParallelConfig(world_size=env.world_size, sp_size=sp, cfg_parallel=replicas == 2,
                          fsdp=fsdp)
    parallelize_dit(model, mesh, pcfg, attention=LocalAttention(backend=attention),
                    shard_root=False)
    model.to_empty(device=env.device)
    source = source or SafetensorsSource.from_index(folder, layout.DIT_INDEX)
    load_local_shards(model, source, str(folder), ignore_missing=layout.is_rebuildable_dit_key)
    return model.eval()


@torch.no_grad()
def merge_lora_local(model: AnimateDiT, pairs: list[LoraPair]) -> int:
    """Merge LoRA pairs into this rank's rows of FSDP-sharded (or whole) Linear weights."""
    from torch.distributed.tensor import DTensor

    modules = dict(model.named_modules())
    for p in pairs:
        w = modules[p.module].weight
        if isinstance(w, DTensor):
            local = w.to_local()
            start, stop = local_rows(w)
            b = p.b[start:stop]
        else:
            local, b = w, p.b
        delta = (b.float().to(local.device) @ p.a.float().to(local.device)) * p.scale
        local.copy_((local.float() + delta).to(local.dtype))
    return len(pairs)


@dataclass
class WorkerState:
    """Per-rank state: the sharded DiT; rank 0 also holds VAE, CLIP, umT5 and the tokenizer."""

    env: WorkerEnv
    bundle: Any  # ModelBundle on rank 0, None elsewhere
    dit: AnimateDiT


def load_state(env: WorkerEnv, config: PoolModelConfig) -> WorkerState:
    """State factory of the pool (runs once per worker)."""
    from wan_animate.checkpoints.load import read_pth
    from wan_animate.checkpoints.official import Precision, load_bundle

    folder = Path(config.ckpt_dir)
    p = Precision.for_device(env.device)
    dtype = p.dit if config.dtype == "auto" else DTYPES[config.dtype]
    dit = build_sharded_dit(env, folder, dtype, config.attention, config.fsdp)
    if config.use_relighting_lora:
        path = folder / layout.RELIGHT_LORA_FILE
        state = read_pth(path, wrapper_keys=(layout.RELIGHT_LORA_WRAPPER_KEY,))
        merge_lora_local(dit, normalize_lora_state(state, str(path)))
    bundle = None
    if env.rank == 0:
        bundle = load_bundle(folder, env.device, Precision(dtype, p.t5, p.clip, p.vae, p.batch),
                             with_dit=False)
        bundle.dit = dit
    return WorkerState(env, bundle, dit)


def _broadcast(obj: Any, env: WorkerEnv) -> Any:
    """rank 0's ``obj`` on every rank (pickled over the gloo control group, tensors on CPU)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=env.control_group)
    return box[0]


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            setattr(obj, name, _to(getattr(obj, name), device))
    return obj


def _denoise_everywhere(state: WorkerState, ctx: JobContext, clips: int, msg: dict) -> torch.Tensor:
    from wan_animate.sampling.denoise import denoise_clip
    from wan_animate.sampling.solvers import make_solver

    dev = state.env.device
    solver = make_solver(msg["solver"], msg["steps"], msg["shift"])
    video, cond = _to(msg["video"], dev), _to(msg["clip"], dev)
    return denoise_clip(state.dit, solver, msg["noise"].to(dev), video, cond, msg["guide"],
                        on_step=lambda s, n: ctx.step(msg["index"] + 1, s, n, clips))


def generate_handler(state: WorkerState, payload: tuple, ctx: JobContext) -> Any:
    """Job "generate": (inputs, options) -> AnimateLatent on rank 0 (None elsewhere)."""
    from wan_animate.sampling.generate import generate_latent

    if ctx.rank != 0:
        while (msg := _broadcast(None, state.env)) is not None:
            _denoise_everywhere(state, ctx, msg["clips"], msg)
        return None
    inputs, options = payload
    clips_total: list[int] = []
    in_denoise = [False]

    def denoise(dit, solver, noise, video, cond, guide, on_step=None, cancelled=None, trace=None):
        index = len(clips_total)
        clips_total.append(index)
        msg = dict(index=index, clips=clips_count[0], solver=options.solver, steps=options.steps,
                   shift=options.shift, guide=guide, noise=noise.cpu(), video=_to(video, "cpu"),
                   clip=_to(cond, "cpu"))
        _broadcast(msg, state.env)
        in_denoise[0] = True
        out = _denoise_everywhere(state, ctx, clips_count[0], msg)
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
    return decode_latent(state.bundle.vae, payload)
