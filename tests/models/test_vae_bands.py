"""The VAE run band by band (bounded memory) equals the whole-frame VAE."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.models import vae_bands
from wan_animate.models.vae import VAEConfig, WanVAE, build_vae
from wan_animate.models.vae_bands import BandPlan, RowBands, plan_bands
from wan_animate.parity.common import read_config


@pytest.fixture(scope="module")
def tiny_vae(official_fixtures: Path) -> WanVAE:
    folder = official_fixtures / "vae"
    vae = build_vae(VAEConfig.from_official(read_config(folder)["constructor"]))
    return load_into(vae, read_safetensors(folder / "weights.safetensors"), str(folder)).eval()


@pytest.fixture(scope="module")
def tall() -> tuple[torch.Tensor, int]:
    """A frame of 41 latent rows: taller than the bands' margins (13 / 10 latent rows)."""
    g = torch.Generator().manual_seed(7)
    return torch.rand(1, 3, 9, 8 * 41, 16, generator=g) * 2 - 1, 41


def test_row_bands_cover_the_frame() -> None:
    bands = RowBands(90, 8)
    assert bands.sizes == (12, 12, 11, 11, 11, 11, 11, 11)
    assert [bands.bounds(i) for i in (0, 1, 7)] == [(0, 12), (12, 24), (79, 90)]
    with pytest.raises(ValueError, match="3 latent rows into 4 bands"):
        RowBands(3, 4)


def test_plan_of_the_full_size_vae() -> None:
    """Margins of the official Wan 2.1 VAE: 13 latent rows into the decoder's upsampling levels,
    75 pixel rows into the encoder's downsampling ones; none left at the output."""
    vae = build_vae(VAEConfig())
    dec = plan_bands([*vae.decoder.upsamples, *vae.decoder.head], 1)
    enc = plan_bands([vae.encoder.conv1, *vae.encoder.downsamples], 8)
    assert (dec.rows[0], dec.rows[-1], dec.need[0], dec.need[-1]) == (1, 8, 13, 0)
    assert (enc.rows[0], enc.rows[-1], enc.need[0], enc.need[-1]) == (8, 1, 75, 0)


@pytest.mark.parametrize("parts", [2, 3, 5, 8])
def test_banded_equals_whole(tiny_vae: WanVAE, tall, parts: int) -> None:
    video, _ = tall
    tiny_vae.bands = 1
    latent = tiny_vae.encode(video)
    frames = tiny_vae.decode(latent)
    try:
        tiny_vae.bands = parts
        assert (tiny_vae.encode(video) - latent).abs().max() <= 1e-5
        assert (tiny_vae.decode(latent) - frames).abs().max() <= 1e-5
    finally:
        tiny_vae.bands = 1


def test_margins_are_needed(tiny_vae: WanVAE, tall, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rows less margin than the plan gives visibly wrong bands (the test can fail)."""
    video, _ = tall
    latent = tiny_vae.encode(video)
    frames = tiny_vae.decode(latent)
    real = plan_bands

    def short(layers, rows_in):
        p = real(layers, rows_in)
        return BandPlan(p.rows, tuple(max(0, n - 2) for n in p.need))

    monkeypatch.setattr(vae_bands, "plan_bands", short)
    tiny_vae.bands = 5
    try:
        assert (tiny_vae.encode(video) - latent).abs().max() > 1e-3
        assert (tiny_vae.decode(latent) - frames).abs().max() > 1e-3
    finally:
        tiny_vae.bands = 1


def test_attention_levels_run_whole(tiny_vae: WanVAE) -> None:
    vae = build_vae(VAEConfig(dim=8, attn_scales=(1.0,)), device="cpu")
    with pytest.raises(vae_bands.NotBandable):
        plan_bands(list(vae.decoder.upsamples), 1)
    vae.bands = 4
    assert vae._parts(10) == 1
    tiny_vae.bands = 4
    assert tiny_vae._parts(3) == 3
    tiny_vae.bands = 1
