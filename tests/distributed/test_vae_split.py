"""The VAE split over a pool by rows (gloo, 2 / 3 / 4 CPU ranks) equals the unsplit VAE."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.distributed.pool import WorkerPool
from wan_animate.distributed.protocol import Job, PoolSpec
from wan_animate.distributed.vae_split import split_decode, split_encode
from wan_animate.models.vae import VAEConfig, WanVAE, build_vae
from wan_animate.parity.common import read_config

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official" / "vae"

# --- run inside the workers ---------------------------------------------------------------


def load_vae(env, config) -> WanVAE:
    """State factory: the VAE fixture's tiny VAE with the official weights, on every rank."""
    folder = Path(config)
    cfg = read_config(folder)
    vae = build_vae(VAEConfig.from_official(cfg["constructor"]))
    return load_into(vae, read_safetensors(folder / "weights.safetensors"), str(folder)).eval()


def vae_job(vae, payload, ctx):
    """Split encode of rank 0's video, then split decode of rank 0's latent."""
    video = payload if ctx.rank == 0 else None
    shape = tuple(payload.shape)
    latent = split_encode(vae, video, shape)
    z_shape = (shape[0], 16, 1 + (shape[2] - 1) // 4, shape[3] // 8, shape[4] // 8)
    return {"latent": latent, "video": split_decode(vae, latent, z_shape)}


# --- tests ----------------------------------------------------------------------------------


def _unsplit(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    vae = load_vae(None, str(FIXTURE))
    latent = vae.encode(video)
    return latent, vae.decode(latent)


@pytest.mark.parametrize("world, rows", [(2, 7), (3, 7), (4, 5), (4, 3)])
def test_split_equals_unsplit(world: int, rows: int) -> None:
    """Latent heights the pool does not divide; 3 rows over 4 ranks runs whole on rank 0."""
    g = torch.Generator().manual_seed(world * 10 + rows)
    video = torch.rand(1, 3, 9, 8 * rows, 24, generator=g) * 2 - 1
    ref_latent, ref_video = _unsplit(video)
    spec = PoolSpec(factory=f"{__name__}:load_vae", handlers={"vae": f"{__name__}:vae_job"},
                    config=str(FIXTURE), world_size=world, device_type="cpu",
                    start_timeout_s=120, abort_grace_s=5)
    pool = WorkerPool(spec)
    try:
        pool.start()
        got = pool.submit(Job("vae", video))
    finally:
        pool.close()
    assert (got["latent"] - ref_latent).abs().max() <= 1e-5
    assert (got["video"] - ref_video).abs().max() <= 1e-5
    assert got["video"].shape == ref_video.shape
