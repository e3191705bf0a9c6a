"""ComfyUI single files (DiT bf16 / fp8-scaled, umT5, CLIP vision, VAE, relight LoRA) -> the same
video as the official folder, in process and on a 2-rank worker pool."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wan_animate.checkpoints import comfy_bundle as cb
from wan_animate.checkpoints import comfy_layout as cl
from wan_animate.checkpoints import layout
from wan_animate.checkpoints.load import LazyTensors, read_pth
from wan_animate.checkpoints.tiny import write_tiny_checkpoint
from wan_animate.cli.demo_media import write_preprocessed
from wan_animate.engine import ModelSpec, load_model, unload_all
from wan_animate.errors import CheckpointError, ParallelConfigError
from wan_animate.models.clip import CLIPVisionConfig, visual_keys
from wan_animate.models.config import DiTConfig
from wan_animate.models.t5 import T5Config
from wan_animate.models.vae import VAEConfig
from wan_animate.sampling.folder import read_preprocessed
from wan_animate.sampling.options import SampleOptions


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("c") / "tiny", seed=7)


@pytest.fixture(scope="module")
def comfy(ckpt: Path) -> dict[str, str]:
    """The tiny networks as ComfyUI single files (models/<folder>/<file>) + a tokenizer folder."""
    root = ckpt.parent / "models"
    sizes = json.loads((ckpt / "wan_animate_sizes.json").read_text())
    vae_sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in sizes["vae"].items()}
    dit = dict(LazyTensors.from_index(ckpt, layout.DIT_INDEX))
    dcfg = cb.file_metadata(DiTConfig.from_json(ckpt / layout.DIT_CONFIG))
    out = {}

    def save(name: str, state: dict, meta: dict | None) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), meta)
        out[name.split("/")[0] + ("" if "fp8" not in name else "_fp8")] = str(path)

    save("diffusion_models/animate_bf16.safetensors",
         cl.export_comfy(dit, "dit", prefix="model.diffusion_model."), dcfg)
    save("diffusion_models/animate_fp8_scaled.safetensors", cl.export_comfy(dit, "dit", fp8="scaled"), dcfg)
    save("text_encoders/umt5.safetensors", cl.export_comfy(read_pth(ckpt / layout.T5_FILE), "t5"),
         cb.file_metadata(T5Config(**sizes["t5"])))
    save("clip_vision/clip_vision_h.safetensors",
         cl.export_comfy(visual_keys(read_pth(ckpt / layout.CLIP_FILE)), "clip", dtype=torch.float32),
         cb.file_metadata(CLIPVisionConfig(**sizes["clip"])))
    save("vae/wan_2.1_vae.safetensors", cl.export_comfy(read_pth(ckpt / layout.VAE_FILE), "vae",
                                                        dtype=torch.float32),
         cb.file_metadata(VAEConfig(**vae_sizes)))
    peft = read_pth(ckpt / layout.RELIGHT_LORA_FILE, wrapper_keys=(layout.RELIGHT_LORA_WRAPPER_KEY,))
    save("loras/relight_lora_bf16.safetensors",   # ComfyUI naming: diffusion_model.*.lora_down/up
         {"diffusion_model." + k.replace("lora_A", "lora_down").replace("lora_B", "lora_up"): v
          for k, v in peft.items()}, None)
    out["tokenizer"] = str(ckpt / layout.T5_TOKENIZER_DIR)
    return out


def spec(comfy: dict[str, str], dit: str = "diffusion_models", **kw) -> ModelSpec:
    files = (comfy[dit], comfy["text_encoders"], comfy["clip_vision"], comfy["vae"])
    kw = {"use_relighting_lora": True, "relight_file": comfy["loras"], **kw}
    return ModelSpec("", device="cpu", dtype="fp32", comfy_files=files, tokenizer_dir=comfy["tokenizer"], **kw)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return read_preprocessed(write_preprocessed(tmp_path_factory.mktemp("in") / "g", 5, 32, 48), False)


OPTS = SampleOptions(frame_num=5, steps=2, seed=4, guide_scale=2.0)


def run(s: ModelSpec, inputs) -> torch.Tensor:
    model = load_model(s)
    try:
        return model.decode(model.sample(inputs, OPTS))
    finally:
        unload_all()


@pytest.fixture(scope="module")
def official_video(ckpt, inputs) -> torch.Tensor:
    return run(ModelSpec(str(ckpt), device="cpu", dtype="fp32", use_relighting_lora=True), inputs)


@pytest.fixture(scope="module")
def fp8_video(comfy, inputs) -> torch.Tensor:
    return run(spec(comfy, "diffusion_models_fp8"), inputs)


def test_bf16_single_files_equal_the_official_folder(comfy, inputs, official_video):
    video = run(spec(comfy), inputs)
    assert video.shape == (3, 5, 32, 48)
    torch.testing.assert_close(video, official_video, atol=0, rtol=0)
    # without the relighting LoRA the video changes (the LoRA file was really merged)
    plain = run(spec(comfy, use_relighting_lora=False), inputs)
    assert (plain - official_video).abs().max() > 1e-3


def test_single_files_with_block_swap_and_t5_on_cpu(comfy, inputs, official_video):
    # the DiT loads on the CPU, one block streams per step, umT5 stays on the CPU: same video
    video = run(spec(comfy, swap_blocks=1, t5_cpu=True), inputs)
    torch.testing.assert_close(video, official_video, atol=0, rtol=0)


def test_fp8_scaled_dit_is_close(ckpt, comfy, official_video, fp8_video):
    ref = dict(LazyTensors.from_index(ckpt, layout.DIT_INDEX))
    deq = cb.load_comfy_dit(comfy["diffusion_models_fp8"], dtype=torch.float32).state_dict()
    worst = max(((deq[k] - ref[k].float()).norm() / ref[k].float().norm()).item()
                for k in ref if ref[k].dim() == 2 and "motion_encoder" not in k)
    assert 0 < worst < 0.05                                     # fp8 e4m3 with one scale per tensor
    rel = ((fp8_video - official_video).norm() / official_video.norm()).item()
    assert 0 < rel < 0.1, rel


def test_pool_reads_rows_of_the_single_file(comfy, inputs, fp8_video):
    pooled = run(spec(comfy, "diffusion_models_fp8", gpus=2), inputs)
    torch.testing.assert_close(pooled, fp8_video, atol=1e-4, rtol=1e-4)


def test_row_source_dequantizes_like_the_whole_file(comfy):
    whole = cl.read_single_file(comfy["diffusion_models_fp8"], "dit", dtype=torch.float32).state
    src = cb.SingleFileDiTSource(comfy["diffusion_models_fp8"], torch.float32)
    assert set(src.keys()) == set(whole)
    key = "blocks.1.cross_attn.k.weight"
    assert src.shape(key) == tuple(whole[key].shape)
    torch.testing.assert_close(src.read(key, 3, 9), whole[key][3:9], atol=0, rtol=0)


def test_errors_name_the_problem(comfy, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="expected a dit checkpoint"):
        load_model(spec(comfy, "text_encoders"))
    with pytest.raises(ParallelConfigError, match="2 attention heads"):
        load_model(spec(comfy, gpus=4))
    with pytest.raises(CheckpointError, match="vae single file not found"):
        ModelSpec("", comfy_files=(comfy["diffusion_models"], comfy["text_encoders"], comfy["clip_vision"],
                                   str(tmp_path / "nope.safetensors"))).validate()
    with pytest.raises(CheckpointError, match="relighting LoRA asked for but no file"):
        load_model(spec(comfy, relight_file=None))
    # no tokenizer anywhere: the error gives the download command
    monkeypatch.delenv("WAN_ANIMATE_CKPT_DIR", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError, match=r"wan-animate setup download --with core --file "
                                              r"google/umt5-xxl/tokenizer\.json"):
        cb.find_tokenizer(None, comfy["text_encoders"])
    # ... and a google/umt5-xxl folder next to the umT5 file is found
    assert cb.find_tokenizer(None, Path(comfy["tokenizer"]).parents[1] / "x.safetensors") == \
        Path(comfy["tokenizer"])


def test_without_config_metadata_the_14b_shapes_are_required(comfy, tmp_path):
    from safetensors import safe_open

    with safe_open(comfy["diffusion_models"], "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    bare = tmp_path / "wan2.2_animate_14B_bf16.safetensors"
    save_file(state, str(bare))
    with pytest.raises(CheckpointError, match=r"do not match the Wan2\.2-Animate-14B .*dim 32 \(expected 5120\)"):
        cb.dit_config(bare)
