"""The ``auto`` memory plan: how many DiT blocks to stream from host memory so that every phase
of a job fits the GPUs found.

The estimate per rank and phase (bytes) is the resident weights plus the phase's working set:

- resident: the DiT's parameters outside the blocks (replicated) + the resident blocks' share
  (1/P of each block on a pool of P, all of it on one GPU) + the VAE on rank 0. Parked umT5 /
  CLIP hold nothing between encodes.
- denoise (every rank): ``DENOISE_BYTES_PER_TOKEN_DIM`` x (tokens / Ulysses degree) x dim, plus
  two gathered blocks on a pool (the one computing, the one prefetched) or one streamed block.
- conditioning (rank 0): the VAE encode's activations, ``VAE_ENCODE_BYTES_PER_PIXEL`` x H x W
  (frames are encoded in causal chunks, so the clip length does not matter), or a parked umT5's
  visit (its weights + 1 GiB), whichever is larger.
- decode (rank 0): ``VAE_DECODE_BYTES_PER_PIXEL`` x H x W for the whole frame; split over P
  ranks a 1/P of it per rank; in K bands on one GPU 1/K of it plus ``VAE_BAND_BYTES_PER_PIXEL``
  x H x W (the bands' margins, the whole-frame mid block, the output). With ``vae`` "auto" on
  one GPU the plan picks the bands when the whole-frame decode would not fit
  (bench/results/vae_split_h200.json: 720p decode 18.9 GiB whole, 4.2 GiB in 8 bands, 2.5 GiB
  per rank split over 8).

The three constants are the H200 measurements of ``bench/pool_memory.py`` at 1280x720, 77 frames
(bench/results/pool_memory_720p_h200.json: 15.8 GiB encode and 19.0 GiB decode working sets at
every pool size; denoise working sets 11.8 / 8.2 / 5.3 / 3.9 GiB at P = 1 / 2 / 4 / 8),
rounded up. The plan takes the fewest swapped blocks for which conditioning and denoising of every
rank role fit ``free - MARGIN``; a plan that cannot fit says so (and what to change).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

GIB = 1024 ** 3
DENOISE_BYTES_PER_TOKEN_DIM = 32.0     # 16 bf16 [L/sp, C] tensors live at the peak of a block
VAE_ENCODE_BYTES_PER_PIXEL = 18.5e3
VAE_DECODE_BYTES_PER_PIXEL = 22.5e3
VAE_BAND_BYTES_PER_PIXEL = 2.4e3
VAE_ENCODE_MARGIN_ROWS = 160           # pixel rows the encoder's bands add (2 x 75, aligned)
WORKSPACE = 1.5 * GIB                  # kernels' workspaces, RoPE tables, the latents
MARGIN = 1.5 * GIB                     # allocator fragmentation, another process's context
UMT5_XXL_BYTES = int(10.6 * GIB)        # bf16 weights of the umT5-XXL encoder (a parked visit)
TARGET = (1280, 720, 77)
"""The clip the plan is made for by default: the official 720p setting, 77 frames."""


@dataclass(frozen=True)
class MemoryPlan:
    """The chosen swap count and the estimate behind it (GiB per rank role and phase)."""

    swap_blocks: int
    ranks: int
    budget_gib: float
    target: tuple[int, int, int]
    resident_gib: dict[str, float] = field(default_factory=dict)
    peak_gib: dict[str, float] = field(default_factory=dict)
    fits: bool = True
    decode_gib: float = 0.0
    """rank 0's expected peak while the VAE decodes (with this plan's resident weights)."""
    vae_bands: int = 1
    """Bands of the one-GPU VAE the plan chose (1 = the whole frame)."""

    def describe(self) -> str:
        """Lines for the console and the Model Status node."""
        w, h, n = self.target
        head = (f"memory plan for {w}x{h}, {n} frames on {self.ranks} GPU(s) with "
                f"{self.budget_gib:.1f} GiB usable each: swap_blocks {self.swap_blocks}")
        rows = [f"  {role}: resident {self.resident_gib[role]:.1f} GiB, expected peak "
                f"{self.peak_gib[role]:.1f} GiB" for role in self.peak_gib]
        bands = f" in {self.vae_bands} bands" if self.vae_bands > 1 else ""
        rows.append(f"  rank 0 VAE decode{bands}: expected peak {self.decode_gib:.1f} GiB")
        tail = [] if self.fits else [
            "  does not fit even with every block swapped: use more GPUs, a smaller clip "
            "(832x480, fewer frames) or t5_cpu; the run may stop out of memory"]
        if self.decode_gib > self.budget_gib:
            tail.append(f"  the {w}x{h} VAE decode needs more than {self.budget_gib:.1f} GiB on "
                        f"rank 0: decode at 832x480, on more GPUs (vae split) or a larger GPU")
        return "\n".join([head, *rows, *tail])


def dit_bytes(cfg, dtype: torch.dtype) -> tuple[int, int, int]:  # noqa: ANN001 - DiTConfig
    """(bytes of one block, of the face-adapter fuser blocks, of everything else) in ``dtype``
    (fp32 islands counted as stored), from a meta build of the DiT."""
    from wan_animate.models.dit import AnimateDiT

    key = (repr(cfg), dtype)
    if key in _DIT_BYTES:
        return _DIT_BYTES[key]
    with torch.device("meta"):
        model = AnimateDiT(cfg).to(dtype)
    size = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    block = size(model.blocks[0])
    fuser = size(model.face_adapter.fuser_blocks)
    _DIT_BYTES[key] = block, fuser, size(model) - block * len(model.blocks) - fuser
    return _DIT_BYTES[key]


_DIT_BYTES: dict[tuple[str, torch.dtype], tuple[int, int, int]] = {}


def estimate(cfg, placement, swap: int, vae_bytes: int = 254 * 2 ** 20, t5_bytes: int = 0,  # noqa: ANN001
             target: tuple[int, int, int] = TARGET, guide: float = 1.0
             ) -> tuple[dict[str, float], dict[str, float], float]:
    """(resident, conditioning + denoising peak) bytes per rank role with ``swap`` swapped
    blocks, and rank 0's decode peak.

    cfg: the DiTConfig. placement: the resolved :class:`~wan_animate.placement.Placement`
    (ranks, fp8, encoders). t5_bytes: umT5's weights when it visits the GPU (parked), else 0.
    target: (width, height, frames).
    """
    from wan_animate.placement import precision

    p = placement.ranks
    w, h, n = target
    block, fuser, other = dit_bytes(cfg, precision(placement).dit)
    if placement.fp8:
        block = block * 9 // 16                       # e4m3 linears, bf16 norms and biases
    share = 1 / p if placement.dit_sharded else 1.0
    tokens = (n // 4 + 2) * (h // 16) * (w // 16)     # latent frames + reference slot, 2x2 patches
    sp = p // 2 if (guide > 1 and p % 2 == 0) else p  # CFG parallel halves the Ulysses degree
    denoise = DENOISE_BYTES_PER_TOKEN_DIM * math.ceil(tokens / sp) * cfg.dim + WORKSPACE
    denoise += 2 * block if p > 1 else block
    encode, decode = vae_bytes_of(placement, w, h)
    encode = max(encode, t5_bytes + GIB if t5_bytes else 0.0)
    dit = other + fuser * share + (cfg.num_layers - swap) * block * share
    res = {"rank 0": dit + vae_bytes, "other ranks": dit} if p > 1 else {"rank 0": dit + vae_bytes}
    peak = {"rank 0": res["rank 0"] + max(denoise, encode)}
    if p > 1:
        peak["other ranks"] = res["other ranks"] + denoise
    return res, peak, res["rank 0"] + decode


def vae_bytes_of(placement, w: int, h: int) -> tuple[float, float]:  # noqa: ANN001
    """(encode, decode) working set of one rank in bytes for a ``w`` x ``h`` frame."""
    px = w * h
    if placement.vae == "split" and placement.ranks > 1:
        p = placement.ranks
        return VAE_ENCODE_BYTES_PER_PIXEL * px / p, VAE_DECODE_BYTES_PER_PIXEL * px / p
    if placement.vae == "bands":
        k = placement.vae_bands
        enc = VAE_ENCODE_BYTES_PER_PIXEL * px * min(1.0, (h / k + VAE_ENCODE_MARGIN_ROWS) / h)
        return enc, VAE_DECODE_BYTES_PER_PIXEL * px / k + VAE_BAND_BYTES_PER_PIXEL * px
    return VAE_ENCODE_BYTES_PER_PIXEL * px, VAE_DECODE_BYTES_PER_PIXEL * px


def plan_memory(cfg, placement, free_bytes: list[int], vae_auto: bool = False,  # noqa: ANN001
                **kw) -> MemoryPlan:
    """The fewest swapped blocks for which conditioning and denoising fit
    ``min(free_bytes) - MARGIN`` on every rank role (``free_bytes``: each GPU of the pool;
    ``kw``: :func:`estimate`'s sizes). ``vae_auto``: on one GPU, decode in bands when the
    whole frame's decode would not fit."""
    import dataclasses

    budget = min(free_bytes) - MARGIN
    if vae_auto and placement.ranks == 1 and placement.vae == "whole":
        whole = estimate(cfg, placement, cfg.num_layers, **kw)[2]
        if whole > budget:
            placement = dataclasses.replace(placement, vae="bands")
    n = cfg.num_layers
    k = next((k for k in range(n + 1)
              if max(estimate(cfg, placement, k, **kw)[1].values()) <= budget), None)
    fits = k is not None
    k = n if k is None else k
    res, peak, decode = estimate(cfg, placement, k, **kw)
    gib = lambda d: {r: round(v / GIB, 1) for r, v in d.items()}  # noqa: E731
    return MemoryPlan(k, placement.ranks, round(budget / GIB, 1), kw.get("target", TARGET),
                      gib(res), gib(peak), fits, round(decode / GIB, 1), placement.vae_bands)


def free_gpu_bytes(device_type: str, ranks: int) -> list[int]:
    """Free memory of GPUs 0..ranks-1 (``torch.cuda.mem_get_info``)."""
    if device_type != "cuda" or not torch.cuda.is_available():
        return []
    return [torch.cuda.mem_get_info(i)[0] for i in range(min(ranks, torch.cuda.device_count()))]


__all__ = ["MemoryPlan", "TARGET", "UMT5_XXL_BYTES", "dit_bytes", "estimate", "free_gpu_bytes",
           "plan_memory", "vae_bytes_of"]
