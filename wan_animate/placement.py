"""Where every network lives and how: decided once from the loader settings and the GPUs found.

:meth:`Placement.resolve` is the one check of the placement options: an option either means the
same at every GPU count or is refused here, up front, with a message naming the option and what
to use instead. Every GPU count (:mod:`wan_animate.engine`) runs the pool's jobs
(:mod:`wan_animate.sampling.jobs`, the DiT by :mod:`wan_animate.distributed.animate`), which apply it:
:func:`encoder_devices` says where umT5 / CLIP load, :func:`park_encoders` parks them,
:func:`precision` gives every network's dtype.

Encoders (umT5-XXL 10.6 GiB, CLIP 1.2 GiB in bf16 / fp16): by default on CUDA they are
*parked*: their weights live in pinned host memory and visit the GPU for one encode per new
prompt / reference (the outputs are kept while those repeat), so they hold no GPU memory while
the DiT denoises or the VAE decodes. ``t5_cpu`` keeps umT5 on the CPU instead (it encodes
there: slower, no GPU visit at all).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from wan_animate.errors import InputError, ParallelConfigError

if TYPE_CHECKING:
    from wan_animate.checkpoints.official import Precision
    from wan_animate.models.bundle import ModelBundle

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ATTENTION = ("auto", "sdpa", "fa3", "cudnn", "flash", "efficient", "math")
MODES = ("exact", "fast")
VAE_MODES = ("auto", "whole", "split", "bands")
BANDS = 8
"""Bands of the one-GPU bounded VAE: a 720p decode peaks at 4.2 GiB instead of 18.9 (bench)."""
EncoderHome = Literal["gpu", "parked", "cpu"]


@dataclass(frozen=True)
class Placement:
    """The resolved placement of one model (equal placements share a loaded model / pool).

    device_type: "cuda" or "cpu". ranks: processes (one per GPU; 1 = ComfyUI's process).
    dtype: the DiT's and umT5's weight dtype name ("auto" = bf16 on CUDA, fp32 on CPU).
    dit_sharded: the DiT is split over the ranks with FSDP2 (else each rank holds all of it).
    swap_blocks: the last DiT blocks streamed from pinned host memory each step (on one GPU
    whole blocks, on a pool each rank's FSDP2 shard of them).
    fp8: fast mode, fp8 e4m3 block linears (one GPU). attention: the self-attention kernel.
    compile: torch.compile of each DiT block's forward (any GPU count). t5 / clip: "gpu" (resident),
    "parked" (pinned host memory, visits the GPU per encode) or "cpu" (t5 only: runs there).
    vae: "whole" (rank 0 encodes / decodes whole frames), "split" (every rank of the pool its
    band of rows, :mod:`wan_animate.distributed.vae_split`) or "bands" (one GPU, ``vae_bands``
    bands one after another, :mod:`wan_animate.models.vae_bands`); the output is the same.
    """

    device_type: str
    ranks: int
    dtype: str = "auto"
    dit_sharded: bool = True
    swap_blocks: int = 0
    fp8: bool = False
    attention: str = "auto"
    compile: bool = False
    t5: EncoderHome = "gpu"
    clip: EncoderHome = "gpu"
    vae: str = "whole"

    @property
    def vae_bands(self) -> int:
        """Bands of rows the one-GPU VAE runs in (:data:`BANDS` in "bands", else 1)."""
        return BANDS if self.vae == "bands" else 1

    @classmethod
    def resolve(cls, *, device_type: str, gpus: int, pooled: bool, dtype: str = "auto",
                attention: str = "auto", mode: str = "exact", compile: str = "auto",
                swap_blocks: int = 0, t5_cpu: bool = False, fsdp: bool = True,
                encoders: str = "auto", vae: str = "auto") -> Placement:
        """Check the loader's placement options once; every refusal names the option and the fix.

        ``pooled``: the DiT runs on the worker pool (``gpus > 1``, a pool of one, torchrun).
        ``encoders``: "auto" (parked on CUDA), "gpu" (resident) or "parked".
        ``vae``: "auto" (split over a pool of several GPUs, else whole; the memory plan picks
        "bands" on one GPU whose free memory is short), "whole", "split" or "bands" (one GPU).
        """
        if gpus < 1:
            raise ParallelConfigError(f"gpus must be >= 1, got {gpus}")
        if dtype not in ("auto", *DTYPES):
            raise InputError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
        if compile not in ("auto", "on", "off"):
            raise InputError(f"compile must be auto, on or off; got {compile!r}")
        if attention not in ATTENTION:
            raise InputError(f"attention must be one of {', '.join(ATTENTION)}; got {attention!r}")
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if encoders not in ("auto", "gpu", "parked"):
            raise InputError(f"encoders must be auto, gpu or parked; got {encoders!r}")
        if vae not in VAE_MODES:
            raise InputError(f"vae must be one of {', '.join(VAE_MODES)}; got {vae!r}")
        if not 0 <= swap_blocks <= 40:
            raise InputError(f"swap_blocks must be between 0 and 40 (the DiT's blocks), got "
                             f"{swap_blocks}")
        ranks = gpus if pooled else 1
        if swap_blocks and ranks > 1 and not fsdp:
            raise InputError("swap_blocks on several GPUs streams each block's FSDP2 shard from "
                             "host memory; it needs fsdp on (or set swap_blocks 0)")
        if mode == "fast" and ranks > 1:
            raise InputError("mode 'fast' (fp8) runs on one GPU; set gpus=1, or use mode 'exact' "
                             "across several GPUs (swap_blocks fits small cards there)")
        if vae == "bands" and ranks > 1:
            raise InputError("vae 'bands' runs the VAE band by band on one GPU; on several GPUs "
                             "use vae 'split' (each GPU its band, the same bounded memory per GPU)")
        cuda = device_type == "cuda"
        park = cuda and encoders in ("auto", "parked")
        vae_home = ("split" if ranks > 1 else "whole") if vae == "auto" else vae
        if vae_home == "split" and ranks == 1:
            vae_home = "whole"  # a pool of one: its one band is the whole frame
        return cls(device_type=device_type, ranks=ranks, dtype=dtype,
                   dit_sharded=fsdp and ranks > 1, swap_blocks=swap_blocks, fp8=mode == "fast",
                   attention=attention,
                   compile=compile == "on" or (compile == "auto" and cuda),
                   t5="cpu" if t5_cpu else ("parked" if park else "gpu"),
                   clip="parked" if park else "gpu", vae=vae_home)

    def describe(self) -> str:
        """One line for the console and the Model Status node."""
        if self.device_type != "cuda":
            dit = "on the CPU"
        else:
            how = "sharded over" if self.dit_sharded and self.ranks > 1 else "whole on each of"
            dit = f"{how} {self.ranks} GPU(s)"
        extras = [f"{self.swap_blocks} blocks swapped"] if self.swap_blocks else []
        extras += ["fp8"] if self.fp8 else []
        extras += ["compiled"] if self.compile else []
        vae = {"whole": "VAE whole on rank 0", "split": f"VAE split by rows over {self.ranks} GPUs",
               "bands": f"VAE in {self.vae_bands} bands of rows"}[self.vae]
        return (f"DiT {dit}{' (' + ', '.join(extras) + ')' if extras else ''}; umT5 {self.t5}, "
                f"CLIP {self.clip}, {vae}")


def precision(placement: Placement) -> Precision:
    """Weight dtypes of every network: the official mix on CUDA, float32 on the CPU; ``dtype``
    (when not "auto") sets the DiT's and umT5's, at every GPU count."""
    from wan_animate.checkpoints.official import Precision

    p = Precision.for_device(placement.device_type)
    if placement.dtype == "auto":
        return p
    d = DTYPES[placement.dtype]
    return Precision(dit=d, t5=d, clip=p.clip, vae=p.vae, batch=p.batch)


def encoder_devices(placement: Placement, device: torch.device) -> dict[str, torch.device]:
    """Where umT5 and CLIP load (``t5_device`` / ``clip_device`` of the bundle loaders): parked
    and CPU encoders load on the CPU, so no GPU copy is ever made on the way."""
    cpu = torch.device("cpu")
    return {"t5_device": device if placement.t5 == "gpu" else cpu,
            "clip_device": device if placement.clip == "gpu" else cpu}


def park_encoders(bundle: ModelBundle, placement: Placement) -> ModelBundle:
    """Park the encoders the placement parks (their weights to pinned host memory)."""
    from wan_animate.models.offload import Parked

    for name in ("t5", "clip"):
        if getattr(placement, name) == "parked":
            bundle.parked[name] = Parked(getattr(bundle, name), bundle.device)
    return bundle


__all__ = ["ATTENTION", "DTYPES", "MODES", "Placement", "encoder_devices", "park_encoders",
           "precision"]
