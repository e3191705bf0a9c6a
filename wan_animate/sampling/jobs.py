"""The Animate jobs of the worker pool: the state factory and the job handlers (every rank).

CLIP and umT5 live on rank 0 only: rank 0 computes a clip's conditioning once (VAE encodes,
CLIP, text, motion tokens), sends it to every rank as a :class:`ClipJob`, every rank denoises
its slice of the tokens, and rank 0 decodes. With the placement's ``vae`` "split" every rank
holds the VAE too, and each encode / decode of rank 0 runs over the whole pool, every rank on
its band of rows (:class:`PoolVAE`; rank 0 sends a :class:`VaeCall`, the others serve it).
A pool of one (the one-GPU path) runs the same factory and handlers in this process.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from wan_animate.checkpoints import layout
from wan_animate.distributed.animate import (MeshCfg, build_sharded_dit, finish_dit, merge_lora_local,
                                             merge_user_loras_local)
from wan_animate.distributed.worker import JobContext, WorkerEnv
from wan_animate.models.dit import AnimateDiT
from wan_animate.models.lora import normalize_lora_state
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


@dataclass
class WorkerState:
    """Per-rank state: the sharded DiT; rank 0 also holds VAE, CLIP, umT5 and the tokenizer;
    with the VAE split every rank holds the VAE (``vae``)."""

    env: WorkerEnv
    bundle: Any  # ModelBundle on rank 0, None elsewhere
    dit: AnimateDiT
    vae: Any = None  # this rank's WanVAE (rank 0: the bundle's; others: only when split)
    vae_split: bool = False  # every encode / decode runs over the pool (PoolVAE / _serve)


@dataclass(frozen=True)
class VaeCall:
    """Rank 0 to the pool: encode ([B, 3, T, H, W]) or decode ([B, 16, F, h, w]) split by rows."""

    op: str
    shape: tuple[int, ...]


class PoolVAE:
    """Rank 0's VAE on a pool whose placement splits it: every ``encode`` / ``decode`` tells
    the other ranks (:class:`VaeCall`) and runs over all of them, each on its band of rows
    (:mod:`wan_animate.distributed.vae_split`); the result, on rank 0, equals the whole VAE's."""

    def __init__(self, vae: torch.nn.Module, env: WorkerEnv) -> None:
        self.vae = vae
        self.env = env

    def __getattr__(self, name: str) -> Any:  # config, device, dtype, ...
        if name == "vae":
            raise AttributeError(name)
        return getattr(self.vae, name)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        from wan_animate.distributed.vae_split import split_encode

        shape = tuple(video.shape)
        _broadcast(VaeCall("encode", shape), self.env)
        return split_encode(self.vae, video, shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        from wan_animate.distributed.vae_split import split_decode

        shape = tuple(z.shape)
        _broadcast(VaeCall("decode", shape), self.env)
        return split_decode(self.vae, z, shape)


def _serve(state: WorkerState, ctx: JobContext) -> None:
    """Ranks > 0: denoise rank 0's clips and take part in its VAE calls until it says None."""
    from wan_animate.distributed.vae_split import split_decode, split_encode

    while (msg := _broadcast(None, state.env)) is not None:
        if isinstance(msg, VaeCall):
            (split_encode if msg.op == "encode" else split_decode)(state.vae, None, msg.shape)
        else:
            _denoise_everywhere(state, ctx, msg)


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
    from wan_animate.checkpoints.official import load_vae

    return _with_rank0_bundle(env, dit, pl, lambda: load_bundle(
        folder, env.device, p, with_dit=False, **encoder_devices(pl, env.device)),
        lambda: load_vae(folder, env.device, p.vae))


def _with_rank0_bundle(env: WorkerEnv, dit: AnimateDiT, placement: Placement,
                       load: Callable[[], Any], load_vae: Callable[[], Any]) -> WorkerState:
    """The worker state: rank 0 also loads VAE, CLIP and umT5 (``load``) around the shared DiT
    and parks the encoders the placement parks; with the VAE split the other ranks load the
    VAE (``load_vae``) and rank 0's becomes a :class:`PoolVAE`."""
    bundle, vae = None, None
    split = placement.vae == "split" and env.world_size > 1
    if env.rank == 0:
        bundle = park_encoders(load(), placement)
        bundle.dit = dit
        vae = bundle.vae
        vae.bands = placement.vae_bands
        if split:
            bundle.vae = PoolVAE(vae, env)
    elif split:
        vae = load_vae()
    return WorkerState(env, bundle, dit, vae, split)


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
    from wan_animate.checkpoints.comfy_bundle import load_comfy_vae

    return _with_rank0_bundle(env, dit, pl, lambda: load_comfy_bundle(
        files, env.device, p, with_dit=False, **encoder_devices(pl, env.device)),
        lambda: load_comfy_vae(files.vae, env.device, p.vae))


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
        _serve(state, ctx)
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

    if state.vae_split:
        return _decode_split(state, payload, ctx)
    if ctx.rank != 0:
        return None
    runner = state.dit.block_runner
    if runner is not None and state.env.device.type == "cuda":
        # a block-swapped DiT on one GPU (a small card) leaves it while the VAE decodes
        from wan_animate.models.offload import parked_on_host

        with parked_on_host(state.dit, runner):
            return decode_latent(state.bundle.vae, payload)
    return decode_latent(state.bundle.vae, payload)


def _decode_split(state: WorkerState, payload: Any, ctx: JobContext) -> Any:
    """Job "decode" with the VAE split: rank 0 decodes over the pool, the others serve."""
    from wan_animate.sampling.generate import decode_latent

    if ctx.rank != 0:
        _serve(state, ctx)
        return None
    try:
        return decode_latent(state.bundle.vae, payload)
    finally:
        _broadcast(None, state.env)
