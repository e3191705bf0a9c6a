"""The engine's job-level API: load a model spec once, sample, decode, close.

Used by the ComfyUI nodes (the model socket carries a :class:`WanAnimateModel`) and the CLI.
A model handle owns where the networks live (:mod:`wan_animate.placement`, decided once): with
``gpus > 1`` (or ``use_pool=True``) a persistent :class:`~wan_animate.distributed.pool.WorkerPool`
holds the DiT sharded across the GPUs; otherwise the same state factory and job handlers run in
this process as a pool of one.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from wan_animate.errors import CheckpointError, InputError, ParallelConfigError, WanAnimateError
from wan_animate.sampling.generate import AnimateLatent
from wan_animate.sampling.options import AnimateInputs, SampleOptions, StepEvent

from wan_animate.placement import (ATTENTION, DTYPES, MODES, Placement, encoder_devices,  # noqa: F401
                                   park_encoders, precision)


@dataclass(frozen=True)
class ModelSpec:
    """What to load and how to place it. Equal specs share one loaded model / pool.

    ckpt_dir: official Wan2.2-Animate-14B folder. gpus: pool size (must divide 40 heads).
    device: "auto" (cuda when present), "cuda" or "cpu". dtype: DiT/T5 weights ("bf16",
    "fp16", "fp32"; "auto" = bf16 on CUDA, fp32 on CPU). attention: self-attention kernel
    ("auto" = FlashAttention-3 on Hopper when installed, else cuDNN SDPA; "sdpa" = torch's
    choice; or one by name). mode: "exact" (bf16, the official numerics) or "fast" (fp8 e4m3
    linears in the DiT blocks and fp8 FA3 attention where installed; one GPU).
    use_relighting_lora: merge relighting_lora.ckpt into the DiT. loras: extra DiT LoRAs
    (path, strength). fsdp: shard the DiT across the pool (FSDP2) instead of replicating it.
    comfy_files: ComfyUI single files (dit, t5, clip, vae) used instead of ``ckpt_dir`` (which
    may then be ""); tokenizer_dir: their umT5 tokenizer folder (searched for when None);
    relight_file: the relighting LoRA file used with comfy_files.
    """

    ckpt_dir: str
    gpus: int = 1
    device: str = "auto"
    dtype: str = "auto"
    attention: str = "auto"
    use_relighting_lora: bool = False
    loras: tuple[tuple[str, float], ...] = ()
    fsdp: bool = True
    use_pool: bool = False
    compile: str = "auto"
    """torch.compile the DiT blocks: "auto" (on for a single CUDA GPU in this process), "on", "off"."""
    comfy_files: tuple[str, str, str, str] | None = None
    tokenizer_dir: str | None = None
    relight_file: str | None = None
    mode: str = "exact"
    swap_blocks: int = 0
    """DiT blocks kept in host memory and streamed to the GPU per step (one GPU; 24 GB cards)."""
    t5_cpu: bool = False
    """Keep umT5-XXL (11 GB) on the CPU; prompts are encoded there once per video."""
    encoders: str = "auto"
    """umT5 / CLIP between encodes: "auto" (= "parked" on CUDA: pinned host memory, a GPU visit
    per new prompt / reference), "gpu" (resident)."""
    vae: str = "auto"
    """VAE placement: "auto" (split by rows over a pool of several GPUs; on one GPU whole, or in
    bands when the memory plan finds the decode short of memory), "whole", "split", "bands"."""
    memory: str = "auto"
    """"auto": on CUDA with swap_blocks 0, swap as many DiT blocks as the GPUs' free memory needs
    for a 1280x720, 77-frame clip (:mod:`wan_animate.memory_plan`; printed at load); "off": none."""

    @property
    def pooled(self) -> bool:
        """The DiT runs on the worker pool (several GPUs, a pool of one, or a torchrun launch)."""
        return self.gpus > 1 or self.use_pool or launched_by_torchrun()

    def placement(self) -> Placement:
        """Where every network lives (:meth:`Placement.resolve`: the one placement check)."""
        return Placement.resolve(device_type=self.resolved_device().type, gpus=self.gpus,
                                 pooled=self.pooled, dtype=self.dtype, attention=self.attention,
                                 mode=self.mode, compile=self.compile,
                                 swap_blocks=self.swap_blocks, t5_cpu=self.t5_cpu, fsdp=self.fsdp,
                                 encoders=self.encoders, vae=self.vae)

    def comfy(self):  # noqa: ANN201 - ComfyFiles | None, imported lazily
        """The single files as :class:`~wan_animate.checkpoints.comfy_bundle.ComfyFiles` (or None)."""
        if self.comfy_files is None:
            return None
        from wan_animate.checkpoints.comfy_bundle import ComfyFiles

        if len(self.comfy_files) != 4:
            raise InputError(f"comfy_files must be (dit, t5, clip, vae), got {self.comfy_files!r}")
        return ComfyFiles(*self.comfy_files, tokenizer=self.tokenizer_dir)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def dit_config(self):  # noqa: ANN201 - DiTConfig, imported lazily
        """The DiT's config: the checkpoint folder's, or the single file's (the official 14B
        one unless the file says otherwise)."""
        files = self.comfy()
        if files is not None:
            from wan_animate.checkpoints.comfy_bundle import declared_dit_config

            return declared_dit_config(files.dit)
        from wan_animate.checkpoints import layout
        from wan_animate.models.config import DiTConfig

        return DiTConfig.from_json(Path(self.ckpt_dir) / layout.DIT_CONFIG)

    def validate(self) -> None:
        """Cheap checks before anything loads: files, GPU count, names."""
        folder = Path(self.ckpt_dir)
        files = self.comfy()
        if files is not None:
            from wan_animate.checkpoints.comfy_bundle import find_tokenizer, lora_list

            files.validate()
            find_tokenizer(files.tokenizer, files.t5)
            lora_list(self.use_relighting_lora, self.relight_file)
        elif not folder.is_dir():
            raise CheckpointError(f"checkpoint folder not found: {folder}; download it with "
                                  f"`wan-animate setup download --local_dir {folder}`")
        self.placement()
        if self.memory not in ("auto", "off"):
            raise InputError(f"memory must be auto or off; got {self.memory!r}")
        for path, _ in self.loras:
            if not Path(path).exists():
                raise CheckpointError(f"LoRA file not found: {path}")
        cfg = self.dit_config()
        cfg.check_sp_size(self.gpus)
        if self.swap_blocks > cfg.num_layers:
            raise InputError(f"swap_blocks {self.swap_blocks} is more than the DiT has "
                             f"blocks; the DiT has {cfg.num_layers} blocks: use at most that")
        dev = self.resolved_device()
        if dev.type == "cuda":
            have = torch.cuda.device_count()
            if self.gpus > have:
                raise ParallelConfigError(f"{self.gpus} GPUs asked for but only {have} visible; "
                                          f"lower the GPU count or check CUDA_VISIBLE_DEVICES")


@dataclass
class WanAnimateModel:
    """A loaded (or lazily loaded) Wan2.2-Animate model; thread-safe for sequential jobs.

    Every GPU count runs the same code: the pool's state factory and job handlers
    (:mod:`wan_animate.sampling.jobs`), in this process for one GPU (a pool of one,
    :meth:`InlineExecutor.in_process`), on a spawned :class:`WorkerPool` for several (or with
    ``use_pool``), on every rank of a ``torchrun`` launch.
    """

    spec: ModelSpec
    _executor: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _plan: object = field(default=None, repr=False)
    _announced: bool = field(default=False, repr=False)

    def memory_plan(self):  # noqa: ANN201 - MemoryPlan | None
        """The ``auto`` memory plan (made once, from the free memory before loading), or None
        where none applies (CPU, ``memory="off"``, an explicit ``swap_blocks``)."""
        spec = self.spec
        if self._plan is None and spec.memory == "auto" and spec.swap_blocks == 0 \
                and spec.resolved_device().type == "cuda":
            from wan_animate.memory_plan import UMT5_XXL_BYTES, free_gpu_bytes, plan_memory

            pl = spec.placement()
            t5 = UMT5_XXL_BYTES if pl.t5 == "parked" else 0
            self._plan = plan_memory(spec.dit_config(), pl, free_gpu_bytes("cuda", pl.ranks),
                                     vae_auto=spec.vae == "auto", t5_bytes=t5)
        return self._plan

    def placement(self) -> Placement:
        """The spec's placement with the memory plan's swap count."""
        import dataclasses

        pl = self.spec.placement()
        plan = self.memory_plan()
        if plan is None:
            return pl
        vae = "bands" if plan.vae_bands > 1 else pl.vae
        return dataclasses.replace(pl, swap_blocks=plan.swap_blocks, vae=vae)

    def describe(self) -> str:
        """Placement and memory plan, for the console and the Model Status node."""
        plan = self.memory_plan()
        return self.placement().describe() + ("" if plan is None else "\n" + plan.describe())

    def pool_spec(self):  # noqa: ANN201 - PoolSpec, imported lazily
        """What every rank loads and which handlers serve the jobs."""
        from wan_animate.sampling.jobs import PoolModelConfig
        from wan_animate.distributed.protocol import PoolSpec

        mod = "wan_animate.sampling.jobs"
        pl = self.placement()
        cfg = PoolModelConfig(self.spec.ckpt_dir, pl, self.spec.use_relighting_lora,
                              self.spec.loras, self.spec.comfy_files, self.spec.tokenizer_dir,
                              self.spec.relight_file)
        return PoolSpec(
            factory=f"{mod}:load_state", config=cfg, world_size=pl.ranks,
            handlers={"generate": f"{mod}:generate_handler", "decode": f"{mod}:decode_handler"},
            device_type=self.spec.resolved_device().type)

    def executor(self):  # noqa: ANN201 - InlineExecutor | WorkerPool
        """The pool that runs the jobs (built on first use; the weights load then)."""
        from wan_animate.distributed.pool import WorkerPool
        from wan_animate.distributed.worker import InlineExecutor

        _LOADED[self.spec] = self     # a handle ComfyUI cached may reload: track it again
        if self._executor is not None:
            return self._executor
        spec = self.pool_spec()
        if self.memory_plan() is not None and not self._announced:
            import logging

            self._announced = True
            logging.getLogger("wan_animate").warning("Wan Animate: %s", self.describe())
        if launched_by_torchrun():
            # this process is one rank of a torchrun launch (one or several nodes)
            self._executor = InlineExecutor(spec)
        elif self.pooled:
            return WorkerPool.get(spec)
        else:
            self._executor = InlineExecutor.in_process(spec, self.spec.resolved_device())
        return self._executor

    def _models(self):  # noqa: ANN202 - ModelBundle, imported lazily
        """The networks of the in-process pool of one (rank 0's bundle, its DiT included)."""
        if self.pooled:
            raise ParallelConfigError("the networks of a spawned pool live in its workers")
        return self.executor().state.bundle

    @property
    def loaded(self) -> bool:
        """Weights are in memory (this process's pool of one, or a torchrun rank)."""
        return self._executor is not None

    @property
    def pooled(self) -> bool:
        return self.spec.pooled

    def sample(self, inputs: AnimateInputs, options: SampleOptions,
               on_step: Callable[[StepEvent], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> AnimateLatent:
        """Denoise every clip; returns the latent the decode step finishes."""
        from wan_animate.distributed.protocol import Job

        options.validate()
        inputs.validate(options.mode)

        def relay(ev) -> None:  # noqa: ANN001 - protocol.StepEvent
            if on_step is not None:
                on_step(StepEvent(ev.clip, ev.clips, ev.step, ev.total))

        with self._lock, oom_advice(self.spec, inputs, options):
            return self.executor().submit(Job("generate", (inputs, options)), on_step=relay,
                                          cancelled=cancelled)

    def decode(self, latent: AnimateLatent) -> torch.Tensor:
        """Latent -> video [3, N, H, W] in [-1, 1]."""
        from wan_animate.distributed.protocol import Job

        with self._lock, oom_advice(self.spec, None, None):
            return self.executor().submit(Job("decode", latent))

    def close(self) -> None:
        """Free the networks (and the pool's GPU memory)."""
        with self._lock:
            if self._executor is not None:
                self._executor.close()
                self._executor = None
            elif self.pooled:
                from wan_animate.distributed.pool import WorkerPool

                WorkerPool.release()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


class OutOfMemory(WanAnimateError):
    """The GPU ran out of memory; the message says what to change."""


@contextmanager
def oom_advice(spec: ModelSpec, inputs: AnimateInputs | None,
               options: SampleOptions | None) -> Iterator[None]:
    """Turn a CUDA out-of-memory error into advice naming the settings that cut memory."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        size = f" at {inputs.size[1]}x{inputs.size[0]}" if inputs is not None else ""
        clip = f" with frame_num {options.frame_num}" if options is not None else ""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(
            f"out of GPU memory{size}{clip} on {spec.gpus} GPU(s). Try, in order: more GPUs "
            f"(gpus=2/4/8 shard the DiT and split the tokens), a smaller frame_num (e.g. 49), "
            f"a smaller preprocessing --resolution_area (e.g. 832 480), swap_blocks (e.g. "
            f"20-34: DiT blocks streamed from host memory, on one GPU or each GPU's shard), "
            f"t5_cpu, on one GPU mode fast (fp8 weights), and closing other GPU programs. "
            f"({e})") from e


def launched_by_torchrun() -> bool:
    """True inside a ``torchrun`` launch of more than one rank (RANK/WORLD_SIZE set)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


_LOADED: dict[ModelSpec, WanAnimateModel] = {}


def load_model(spec: ModelSpec) -> WanAnimateModel:
    """The model for ``spec``, reused while the spec is unchanged; a new spec frees the old."""
    spec.validate()
    if spec in _LOADED:
        return _LOADED[spec]
    for old in list(_LOADED):
        _LOADED.pop(old).close()
    model = WanAnimateModel(spec)
    _LOADED[spec] = model
    return model


def unload_all() -> int:
    """Close every loaded model; returns how many were closed."""
    n = len(_LOADED)
    for key in list(_LOADED):
        _LOADED.pop(key).close()
    return n
