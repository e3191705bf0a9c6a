"""Parity of :class:`wan_animate.models.vae.WanVAE` against the official ``vae`` fixture.

The fixture drives the official ``WanVAE_`` through the ``Wan2_1_VAE`` wrapper (README.md of the
fixture). Each output is reproduced with the same call on our module; the decodes start from the
fixture's own latents so that encode and decode are judged separately. The wrapper's latent
mean/std come from ``config.json`` and are also checked against our built-in constants.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.models.vae import LATENT_MEAN, LATENT_STD, VAEConfig, build_vae
from wan_animate.parity.common import Comparison, compare, error, exact, read_config, tolerance


def run(folder: Path) -> list[Comparison]:
    folder = Path(folder)
    name = folder.name
    cfg = read_config(folder)
    weights = folder / "weights.safetensors"
    vae = load_into(build_vae(VAEConfig.from_official(cfg["constructor"])),
                    read_safetensors(weights), str(weights)).eval()
    io = read_safetensors(folder / "io.safetensors")

    consts = cfg["wrapper_constants"]
    mean = torch.tensor(consts["mean"], dtype=torch.float32)
    std = torch.tensor(consts["std"], dtype=torch.float32)
    inv_std = 1.0 / std
    zeros, ones = torch.zeros_like(mean), torch.ones_like(mean)

    def video() -> torch.Tensor:
        return io["video"][None]  # [3, T, H, W] -> [1, 3, T, H, W]

    def latent(key: str) -> torch.Tensor:
        return io[key][None]  # [z, F, h, w] -> [1, z, F, h, w]

    calls: dict[str, Callable[[], torch.Tensor]] = {
        "encode_out_latent": lambda: vae.encode_raw(video(), mean, inv_std),
        "encode_out_raw_mean": lambda: vae.encode_raw(video(), zeros, ones),
        "decode_out_video": lambda: vae.decode_raw(latent("encode_out_latent"), mean, inv_std,
                                                   clamp=True),
        "decode_out_video_unclamped": lambda: vae.decode_raw(latent("encode_out_latent"), mean,
                                                             inv_std),
        "decode_random_out_video": lambda: vae.decode_raw(latent("decode_random_in_latent"), mean,
                                                          inv_std, clamp=True),
        "decode_random_out_video_unclamped": lambda: vae.decode_raw(
            latent("decode_random_in_latent"), mean, inv_std),
    }

    results: list[Comparison] = [
        exact(name, "latent_mean_std_constants",
              torch.tensor([LATENT_MEAN, LATENT_STD], dtype=torch.float32), torch.stack([mean, std])),
    ]
    outputs = cfg.get("io_keys", {}).get("outputs", list(calls))
    for key in outputs:
        if key not in calls:
            results.append(error(name, key, "no runner call for this fixture output"))
            continue
        ours = calls[key]()[0]
        results.append(compare(name, key, ours, io[key], *tolerance(cfg, "outputs", key)))
    return results
