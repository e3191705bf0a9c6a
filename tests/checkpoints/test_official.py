"""Official folder layout: tiny checkpoints load strictly; broken folders give named errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wan_animate.checkpoints import layout
from wan_animate.checkpoints.load import read_pth
from wan_animate.checkpoints.official import load_bundle, load_dit, load_relighting_lora
from wan_animate.checkpoints.tiny import write_tiny_checkpoint
from wan_animate.errors import CheckpointError


@pytest.fixture()
def ckpt(tmp_path) -> Path:
    return write_tiny_checkpoint(tmp_path / "tiny")


def test_tiny_checkpoint_loads_strictly_in_bf16(ckpt):
    dit = load_dit(ckpt, "cpu", torch.bfloat16)
    assert {p.dtype for p in dit.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in dit.parameters())
    assert load_relighting_lora(dit, ckpt) == 12 * dit.cfg.num_layers
    b = load_bundle(ckpt, "cpu")
    ids, mask = b.tokenizer(["视频中的人在做动作"])
    assert ids.shape == (1, 512) and 1 < int(mask.sum()) < 512


def test_missing_shard_names_the_file(ckpt):
    shard = sorted(ckpt.glob("diffusion_pytorch_model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        load_dit(ckpt)


def test_renamed_key_is_named(ckpt):
    index = ckpt / layout.DIT_INDEX
    data = json.loads(index.read_text())
    data["weight_map"]["head.head.weight_x"] = data["weight_map"].pop("head.head.weight")
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"head\.head\.weight"):
        load_dit(ckpt)


class Evil:
    """An arbitrary pickled object: weights_only=True must refuse it."""


def test_pth_with_a_non_tensor_is_refused(tmp_path):
    torch.save({"a": torch.zeros(1), "b": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth"):
        read_pth(tmp_path / "evil.pth")
    torch.save({"a": torch.zeros(1), "b": 3}, tmp_path / "int.pth")
    with pytest.raises(CheckpointError, match="not tensors"):
        read_pth(tmp_path / "int.pth")


def test_missing_folder_and_vae(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_bundle(tmp_path / "nope")
    (ckpt / layout.VAE_FILE).unlink()
    with pytest.raises(CheckpointError, match="Wan2.1_VAE.pth"):
        load_bundle(ckpt)


def test_config_and_relighting_errors_say_how_to_fix(ckpt):
    (ckpt / layout.RELIGHT_LORA_FILE).unlink()
    dit = load_dit(ckpt)
    with pytest.raises(CheckpointError, match=r"relighting_lora.ckpt; fetch it with `wan-animate "
                                              r"setup download --with relight --local_dir "):
        load_relighting_lora(dit, ckpt)
    config = ckpt / "config.json"
    config.write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid DiT config .*--force-redownload"):
        load_dit(ckpt)
    config.unlink()
    with pytest.raises(CheckpointError, match="missing DiT config: .*setup download --with core"):
        load_dit(ckpt)


def test_missing_vae_says_how_to_fetch_it(ckpt):
    (ckpt / layout.VAE_FILE).unlink()
    with pytest.raises(CheckpointError, match="setup download --with core"):
        load_bundle(ckpt)
