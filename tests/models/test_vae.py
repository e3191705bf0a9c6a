"""Wan 2.1 VAE: parity with the official fixture, checkpoint layout, chunking and cache behaviour."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.errors import CheckpointError, InputError
from wan_animate.models.vae import (LATENT_MEAN, LATENT_STD, VAEConfig, WanVAE, build_vae,
                                    latent_scale)
from wan_animate.models.vae_blocks import CausalCache
from wan_animate.parity import vae as vae_parity
from wan_animate.parity.common import read_config


@pytest.fixture(scope="module")
def fixture_dir(official_fixtures: Path) -> Path:
    return official_fixtures / "vae"


@pytest.fixture(scope="module")
def tiny_vae(fixture_dir: Path) -> WanVAE:
    """The fixture's tiny VAE with the official (non-trivial) weights."""
    cfg = read_config(fixture_dir)
    weights = fixture_dir / "weights.safetensors"
    vae = build_vae(VAEConfig.from_official(cfg["constructor"]))
    return load_into(vae, read_safetensors(weights), str(weights)).eval()


def _video(frames: int, h: int = 16, w: int = 24, seed: int = 0, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, h, w, generator=g) * 2 - 1


def test_parity_with_official_fixture(fixture_dir: Path) -> None:
    results = vae_parity.run(fixture_dir)
    names = {c.name for c in results}
    assert {"encode_out_latent", "encode_out_raw_mean", "decode_out_video",
            "decode_out_video_unclamped", "decode_random_out_video",
            "decode_random_out_video_unclamped"} <= names
    failed = [c.line() for c in results if not c.passed]
    assert not failed, "\n".join(failed)


def test_public_encode_decode_use_official_constants(fixture_dir: Path, tiny_vae: WanVAE) -> None:
    cfg = read_config(fixture_dir)
    assert list(LATENT_MEAN) == pytest.approx(cfg["wrapper_constants"]["mean"], abs=1e-6)
    assert list(LATENT_STD) == pytest.approx(cfg["wrapper_constants"]["std"], abs=1e-6)
    io = read_safetensors(fixture_dir / "io.safetensors")
    z = tiny_vae.encode(io["video"][None])
    torch.testing.assert_close(z[0], io["encode_out_latent"], atol=1e-4, rtol=0)
    video = tiny_vae.decode(io["encode_out_latent"][None])
    torch.testing.assert_close(video[0], io["decode_out_video"], atol=1e-4, rtol=0)
    assert video.min() >= -1 and video.max() <= 1


def test_full_size_keys_and_shapes_match_official_checkpoint(fixture_dir: Path) -> None:
    ref = json.loads((fixture_dir / "full_size_key_shapes.json").read_text())
    assert VAEConfig.from_official(ref["constructor"]) == VAEConfig()
    vae = build_vae()  # full size on meta
    ours = {k: list(v.shape) for k, v in vae.state_dict().items()}
    expected = {k: v["shape"] for k, v in ref["keys"].items()}
    assert len(ours) == len(expected) == 194
    assert sorted(set(ours) ^ set(expected)) == []
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert wrong == {}
    assert all(t.device.type == "meta" for t in vae.state_dict().values())


def test_from_official_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="bogus"):
        VAEConfig.from_official({"dim": 8, "bogus": 1})
    with pytest.raises(ValueError, match="temporal_downsample"):
        VAEConfig(temporal_downsample=(True, True))


@pytest.mark.parametrize("frames,latent", [(1, 1), (5, 2), (9, 3), (13, 4)])
def test_encode_latent_frame_count(tiny_vae: WanVAE, frames: int, latent: int) -> None:
    z = tiny_vae.encode(_video(frames))
    assert tuple(z.shape) == (1, 16, latent, 2, 3)
    assert z.dtype == torch.float32
    assert tiny_vae.config.latent_frames(frames) == latent
    video = tiny_vae.decode(z)
    assert tuple(video.shape) == (1, 3, 4 * latent - 3, 16, 24)


def test_encode_drops_trailing_frames_like_official(tiny_vae: WanVAE,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    v = _video(8)
    with caplog.at_level(logging.WARNING, logger="wan_animate.models.vae"):
        z8 = tiny_vae.encode(v)
    assert "dropped" in caplog.text
    z5 = tiny_vae.encode(v[:, :, :5])
    assert torch.equal(z8, z5)


def test_encode_is_causal(tiny_vae: WanVAE) -> None:
    """Latent frames 0..1 depend only on video frames 0..4 (chunked causal encode)."""
    v = _video(9, seed=3)
    full = tiny_vae.encode(v)
    head = tiny_vae.encode(v[:, :, :5])
    torch.testing.assert_close(full[:, :, :2], head, atol=1e-5, rtol=0)
    v2 = v.clone()
    v2[:, :, 5:] = -v2[:, :, 5:]
    assert not torch.allclose(tiny_vae.encode(v2)[:, :, 2], full[:, :, 2])


def test_calls_are_independent(tiny_vae: WanVAE) -> None:
    """The causal cache is per call: an earlier call never changes a later one."""
    a, b = _video(9, seed=1), _video(9, seed=2)
    za = tiny_vae.encode(a)
    tiny_vae.encode(b)
    assert torch.equal(tiny_vae.encode(a), za)
    da = tiny_vae.decode(za)
    tiny_vae.decode(tiny_vae.encode(b))
    assert torch.equal(tiny_vae.decode(za), da)


def test_batch_equals_single(tiny_vae: WanVAE) -> None:
    v = _video(5, batch=2, seed=4)
    zb = tiny_vae.encode(v)
    torch.testing.assert_close(zb[1:], tiny_vae.encode(v[1:]), atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny_vae.decode(zb)[1:], tiny_vae.decode(zb[1:]), atol=1e-5, rtol=0)


def test_raw_calls_apply_scale(tiny_vae: WanVAE) -> None:
    v = _video(5, seed=5)
    mean, inv_std = latent_scale()
    mu = tiny_vae.encode_raw(v, 0.0, 1.0)
    torch.testing.assert_close(tiny_vae.encode(v), (mu - mean.view(1, -1, 1, 1, 1))
                               * inv_std.view(1, -1, 1, 1, 1), atol=1e-6, rtol=0)
    z = torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(6)) * 3
    unclamped = tiny_vae.decode_raw(z, mean, inv_std)
    assert unclamped.abs().max() > 1  # the clamp below is exercised
    torch.testing.assert_close(tiny_vae.decode(z), unclamped.clamp(-1, 1), atol=0, rtol=0)


def test_bf16_weights_run_and_stay_close(tiny_vae: WanVAE) -> None:
    vae16 = build_vae(tiny_vae.config)
    load_into(vae16, tiny_vae.state_dict(), "memory", dtype=torch.bfloat16)
    v = _video(5, seed=7)
    z16 = vae16.encode(v)  # fp32 input is cast to the weights' dtype
    assert z16.dtype == torch.float32
    z32 = tiny_vae.encode(v)
    assert float((z16 - z32).abs().max()) < 0.1 * float(z32.abs().max())
    assert vae16.decode(z16).dtype == torch.float32


def test_rejects_bad_shapes(tiny_vae: WanVAE) -> None:
    with pytest.raises(InputError, match=r"\[1, 4, 5, 16, 24\]|\(1, 4, 5, 16, 24\)"):
        tiny_vae.encode(torch.zeros(1, 4, 5, 16, 24))
    with pytest.raises(InputError, match="latent"):
        tiny_vae.decode(torch.zeros(1, 8, 2, 2, 3))


def test_strict_load_names_missing_key(fixture_dir: Path) -> None:
    cfg = read_config(fixture_dir)
    state = read_safetensors(fixture_dir / "weights.safetensors")
    del state["decoder.upsamples.3.time_conv.weight"]
    with pytest.raises(CheckpointError, match=r"decoder\.upsamples\.3\.time_conv\.weight"):
        load_into(build_vae(VAEConfig.from_official(cfg["constructor"])), state, "vae.pth")


def test_cache_is_filled_per_chunk(tiny_vae: WanVAE) -> None:
    """Every causal layer of the encoder keeps state after one chunk (nothing is skipped)."""
    cache = CausalCache()
    with torch.no_grad():
        tiny_vae.encoder(_video(1), cache)
    from wan_animate.models.vae_blocks import CausalConv3d, Resample

    causal = [m for m in tiny_vae.encoder.modules()
              if (isinstance(m, CausalConv3d) and m.front_pad > 0)
              or (isinstance(m, Resample) and m.mode == "downsample3d")]
    assert len(cache) == len(causal) > 0
