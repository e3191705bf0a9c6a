"""VAE encode/decode timing and weight-load timing (bench_dit.py parts ``vae`` and ``load``).

VAE: our WanVAE per dtype and size, warm-up on a few frames at the same resolution.
Load: a safetensors shard of a few full-size DiT blocks written to local disk, read back through
our loader (``LazyTensors`` + ``load_into``) cold (page cache dropped) and warm, extrapolated
linearly in bytes to the whole DiT.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common import GIB, Budget, Size, errmsg, free, log, materialize, measure, timed
from wan_animate.models.config import DiTConfig
from wan_animate.models.dit import AnimateDiT
from wan_animate.models.dit_blocks import AttentionBlock


def bench_vae(sizes: list[Size], frames: int, dtypes: list[torch.dtype], repeats: int, tiny: bool,
              device: torch.device, seed: int, budget: Budget) -> list[dict[str, Any]]:
    from wan_animate.models.vae import VAEConfig, WanVAE

    cfg = VAEConfig(dim=8) if tiny else VAEConfig()
    rows = []
    for dt in dtypes:
        vae = materialize(lambda: WanVAE(cfg), device, dt, seed)
        for size in sizes:
            g = torch.Generator(device=device).manual_seed(seed)
            video = torch.rand(1, 3, frames, size.height, size.width, generator=g, device=device) * 2 - 1
            lat = cfg.latent_frames(frames)
            z = torch.randn(1, cfg.z_dim, lat, *size.latent(), generator=g, device=device)
            for op, full, warm, scale in (
                    ("encode", lambda: vae.encode(video), lambda: vae.encode(video[:, :, :5]), frames / 5),
                    ("decode", lambda: vae.decode(z), lambda: vae.decode(z[:, :, :2]), lat / 2)):
                name = f"vae {op} {size.name} {frames} frames {str(dt).split('.')[-1]}"
                row: dict[str, Any] = {"op": op, "size": size.name, "frames": frames,
                                       "dtype": str(dt).split(".")[-1]}
                if not budget.fits(3):
                    budget.skip(name)
                    continue
                try:
                    rec = measure(name, full, warm, scale, repeats, device, budget)
                except Exception as e:  # noqa: BLE001 - OOM or a failing kernel: report, go on
                    free(device)
                    row["error"] = errmsg(e)
                    rows.append(row)
                    continue
                out = rec.pop("_out")
                rec["out_finite"] = bool(torch.isfinite(out).all()) if out is not None else None
                rec["activation_peak_gib"] = (round(rec["peak_gib"] - rec["resident_gib"], 2)
                                              if rec["peak_gib"] is not None else None)
                row.update(rec)
                rows.append(row)
                log(f"{name}: median {rec['median_s']} s of {rec['times_s']}, activations peak "
                    f"{rec['activation_peak_gib']} GiB")
                del out
            video = z = None
            free(device)
        vae = None
        free(device)
    return rows


class _Blocks(nn.Module):
    """``blocks.{i}.*`` keys of the DiT, for the loader test."""

    def __init__(self, cfg: DiTConfig, n: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            AttentionBlock(cfg.dim, cfg.ffn_dim, cfg.num_heads, cfg.eps, cfg.clip_tokens,
                           cfg.cross_attn_norm) for _ in range(n)])


def bench_load(cfg: DiTConfig, n_blocks: int, folder: Path, device: torch.device, dtype: torch.dtype,
               seed: int, budget: Budget) -> dict[str, Any]:
    """Write ``n_blocks`` DiT blocks as one safetensors file; time our loader reading it back."""
    from safetensors.torch import save_file

    from wan_animate.checkpoints.load import LazyTensors, load_into

    if not budget.fits(20):
        budget.skip("load")
        return {"skipped": True}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench_blocks.safetensors"
    blocks = materialize(lambda: _Blocks(cfg, n_blocks), device, dtype, seed)
    t0 = time.perf_counter()
    state = {k: v.detach().contiguous().cpu() for k, v in blocks.state_dict().items()}
    t_d2h = time.perf_counter() - t0
    del blocks
    free(device)
    t0 = time.perf_counter()
    save_file(state, str(path), metadata={"format": "pt"})
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        t_write = time.perf_counter() - t0
        dropped = "posix_fadvise(DONTNEED) after fsync"
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except (AttributeError, OSError) as e:
            dropped = f"page cache NOT dropped ({e})"
    finally:
        os.close(fd)
    nbytes = path.stat().st_size
    del state

    def load() -> nn.Module:
        with torch.device("meta"):
            target = _Blocks(cfg, n_blocks)
        lazy = LazyTensors.from_file(path, device=device)
        return load_into(target, lazy, str(path), device=device, dtype=dtype)

    t_cold, m = timed(load, device)
    del m
    free(device)
    t_warm, m = timed(load, device)
    del m
    free(device)
    with torch.device("meta"):
        full_bytes = sum(p.numel() for p in AnimateDiT(cfg).parameters()) * torch.finfo(dtype).bits // 8
    res = {"blocks": n_blocks, "file_gib": round(nbytes / GIB, 3), "device_to_host_s": round(t_d2h, 2),
           "write_s": round(t_write, 2), "write_gib_per_s": round(nbytes / GIB / t_write, 2),
           "cold": dropped, "load_cold_s": round(t_cold, 3),
           "load_cold_gib_per_s": round(nbytes / GIB / t_cold, 2), "load_warm_s": round(t_warm, 3),
           "load_warm_gib_per_s": round(nbytes / GIB / t_warm, 2),
           "full_dit_gib": round(full_bytes / GIB, 2),
           "full_dit_estimate_cold_s": round(t_cold * full_bytes / nbytes, 1),
           "full_dit_estimate_warm_s": round(t_warm * full_bytes / nbytes, 1),
           "extrapolation": "linear in bytes: full-DiT bf16 bytes / shard bytes x shard time; same "
                            "disk, one process reading shards one after another"}
    path.unlink()
    log(f"load: {res['file_gib']} GiB in {t_cold:.2f} s cold ({res['load_cold_gib_per_s']} GiB/s), "
        f"{t_warm:.2f} s warm -> full DiT ~{res['full_dit_estimate_cold_s']} s cold")
    return res
