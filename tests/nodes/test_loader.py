"""Load Wan Animate Model: folder resolution (ComfyUI model folders / absolute path) and checks."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from wan_animate.engine import WanAnimateModel
from wan_animate.errors import CheckpointError

from nodes_testkit import run_node


@pytest.fixture(scope="module")
def loader(nodes):  # noqa: ANN001, ANN201
    return sys.modules[f"{nodes.__name__}.loader"]


@pytest.fixture
def comfy_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_ckpt: Path) -> Path:
    """A fake ``folder_paths`` whose models dir holds wan_animate/<tiny> and diffusion_models/<tiny>."""
    models = tmp_path / "models"
    for sub in ("wan_animate/Tiny-Animate", "diffusion_models/Other-Animate"):
        (models / sub).parent.mkdir(parents=True, exist_ok=True)
        (models / sub).symlink_to(tiny_ckpt)
    (models / "wan_animate" / "not-a-checkpoint").mkdir()
    registered: dict[str, list[str]] = {"diffusion_models": [str(models / "diffusion_models")]}
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models)
    fp.add_model_folder_path = lambda name, path, is_default=False: registered.setdefault(name, [path])
    fp.get_folder_paths = lambda name: list(registered[name])
    fp.get_filename_list = lambda name: sorted(f.name for p in registered.get(name, [])
                                               if Path(p).is_dir() for f in Path(p).iterdir() if f.is_file())
    fp.get_full_path = lambda name, file: next((str(Path(p) / file) for p in registered.get(name, [])
                                                if (Path(p) / file).is_file()), None)
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    monkeypatch.delenv("WAN_ANIMATE_CKPT_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return models


def test_names_from_comfyui_model_folders(loader, nodes, comfy_models: Path) -> None:
    choices = loader.checkpoint_choices()
    assert choices == {"Tiny-Animate": comfy_models / "wan_animate" / "Tiny-Animate",
                       "diffusion_models/Other-Animate": comfy_models / "diffusion_models" / "Other-Animate"}
    combo = nodes.WanAnimateModelLoader.define_schema().inputs[0]
    assert combo.options == ["Tiny-Animate", "diffusion_models/Other-Animate", loader.USE_PATH]
    assert combo.default == "Tiny-Animate"
    assert loader.resolve_checkpoint("Tiny-Animate", "") == choices["Tiny-Animate"]
    with pytest.raises(CheckpointError, match="'Nope' not found .*found: Tiny-Animate"):
        loader.resolve_checkpoint("Nope", "")


def test_absolute_path_wins(loader, tiny_ckpt: Path) -> None:
    assert loader.resolve_checkpoint("anything", f"  {tiny_ckpt}  ") == tiny_ckpt
    with pytest.raises(CheckpointError, match="absolute"):
        loader.resolve_checkpoint(loader.USE_PATH, "relative/folder")
    with pytest.raises(CheckpointError, match="not a folder"):
        loader.resolve_checkpoint(loader.USE_PATH, str(tiny_ckpt / "missing"))
    with pytest.raises(CheckpointError, match="ckpt_path is empty"):
        loader.resolve_checkpoint(loader.USE_PATH, "")


def test_validate_gpus_against_the_checkpoint_heads(nodes, tiny_ckpt: Path, monkeypatch) -> None:
    v = nodes.WanAnimateModelLoader.validate_inputs
    ok = {"checkpoint": "(use ckpt_path)", "ckpt_path": str(tiny_ckpt)}
    assert v(**ok, gpus=2) is True                                 # the tiny DiT has 2 heads
    assert "cannot split the DiT's 2 attention heads" in v(**ok, gpus=4)
    assert "gpus = 9 is outside 1..8" in v(**ok, gpus=9)
    assert "not a folder" in v(checkpoint="(use ckpt_path)", ckpt_path=str(tiny_ckpt / "x"), gpus=1)
    assert v(checkpoint=None, ckpt_path=str(tiny_ckpt), gpus=1) is True   # linked: checked at run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "2 GPUs asked for but only 1 visible" in v(**ok, gpus=2)


def test_execute_returns_a_reused_handle(nodes, tiny_ckpt: Path) -> None:
    args = {"checkpoint": "(use ckpt_path)", "ckpt_path": str(tiny_ckpt), "dtype": "fp32",
            "attention": "sdpa", "gpus": 1, "fsdp": False, "relighting_lora": True}
    (model,) = run_node(nodes.WanAnimateModelLoader, **args)
    assert isinstance(model, WanAnimateModel)
    assert (model.spec.ckpt_dir, model.spec.dtype, model.spec.attention, model.spec.fsdp,
            model.spec.use_relighting_lora) == (str(tiny_ckpt), "fp32", "sdpa", False, True)
    assert run_node(nodes.WanAnimateModelLoader, **args)[0] is model


@pytest.fixture
def single_files(comfy_models: Path, tiny_ckpt: Path) -> dict[str, str]:
    """The tiny networks exported as ComfyUI single files in the fake models folders."""
    import sys as _sys

    from safetensors.torch import save_file

    from wan_animate.checkpoints import comfy_bundle as cb
    from wan_animate.checkpoints import comfy_layout as cl
    from wan_animate.checkpoints import layout
    from wan_animate.checkpoints.load import LazyTensors, read_pth
    from wan_animate.models.clip import visual_keys
    from wan_animate.models.config import DiTConfig

    fp = _sys.modules["folder_paths"]
    import json

    from wan_animate.checkpoints.comfy_bundle import CONFIG_METADATA_KEY

    sizes = json.loads((tiny_ckpt / "wan_animate_sizes.json").read_text())
    states = {"diffusion_models": ("dit", dict(LazyTensors.from_index(tiny_ckpt, layout.DIT_INDEX)),
                                   cb.file_metadata(DiTConfig.from_json(tiny_ckpt / layout.DIT_CONFIG))),
              "text_encoders": ("t5", read_pth(tiny_ckpt / layout.T5_FILE), None),
              "clip_vision": ("clip", visual_keys(read_pth(tiny_ckpt / layout.CLIP_FILE)), None),
              "vae": ("vae", read_pth(tiny_ckpt / layout.VAE_FILE), None)}
    for kind, net in (("text_encoders", "t5"), ("clip_vision", "clip"), ("vae", "vae")):
        states[kind] = (*states[kind][:2], {CONFIG_METADATA_KEY: json.dumps(sizes[net])})
    names = {}
    for kind, (net, state, meta) in states.items():
        folder = comfy_models / kind
        folder.mkdir(parents=True, exist_ok=True)
        fp.add_model_folder_path(kind, str(folder))
        save_file(cl.export_comfy(state, net), str(folder / f"{net}.safetensors"), meta)
        names[kind] = f"{net}.safetensors"
    return names


def test_single_file_widgets(loader, nodes, single_files, comfy_models: Path) -> None:
    s = {i.id: i for i in nodes.WanAnimateModelLoader.define_schema().inputs}
    assert s["dit_file"].options == [loader.OFFICIAL, "dit.safetensors"]
    assert s["vae_file"].options == [loader.OFFICIAL, "vae.safetensors"] and s["vae_file"].optional
    files = {"dit_file": "dit.safetensors", "t5_file": "t5.safetensors",
             "clip_file": "clip.safetensors", "vae_file": "vae.safetensors"}
    spec = loader.build_spec("Tiny-Animate", "", files, gpus=1)
    assert spec.ckpt_dir == "" and spec.comfy_files[0].endswith("diffusion_models/dit.safetensors")
    # the tokenizer comes from the chosen checkpoint folder when no tokenizer_path is given
    assert spec.tokenizer_dir == str(comfy_models / "wan_animate" / "Tiny-Animate" / "google" / "umt5-xxl")
    v = nodes.WanAnimateModelLoader.validate_inputs
    assert v(checkpoint="Tiny-Animate", ckpt_path="", gpus=1, **files) is True
    assert "set all four single files" in v(checkpoint="Tiny-Animate", ckpt_path="", gpus=1,
                                            **{**files, "vae_file": loader.OFFICIAL})
    assert "not found in ComfyUI/models/vae/" in v(checkpoint="Tiny-Animate", ckpt_path="", gpus=1,
                                                   **{**files, "vae_file": "dit.safetensors"})
    (comfy_models / "vae" / "umt5.safetensors").symlink_to(comfy_models / "text_encoders" / "t5.safetensors")
    assert "expected a vae checkpoint" in v(checkpoint="Tiny-Animate", ckpt_path="", gpus=1,
                                            **{**files, "vae_file": "umt5.safetensors"})
    assert "cannot split the DiT's 2 attention heads" in v(checkpoint="Tiny-Animate", ckpt_path="",
                                                           gpus=4, **files)
    args = {"checkpoint": "Tiny-Animate", "ckpt_path": "", "dtype": "fp32", "attention": "sdpa",
            "gpus": 1, "fsdp": False, "relighting_lora": False, **files}
    (model,) = run_node(nodes.WanAnimateModelLoader, **args)
    assert model.spec.comfy_files == spec.comfy_files
    bundle = model._models()
    assert bundle.dit.blocks[0].self_attn.q.weight.dtype == torch.float32
    model.close()
    with pytest.raises(CheckpointError, match="relighting LoRA asked for but no file"):
        run_node(nodes.WanAnimateModelLoader, **{**args, "relighting_lora": True})


def test_speed_memory_and_lora_widgets_reach_the_spec(loader, nodes, comfy_models: Path) -> None:
    loras = comfy_models / "loras"
    loras.mkdir()
    (loras / "distill_4step.safetensors").write_bytes(b"")
    sys.modules["folder_paths"].add_model_folder_path("loras", str(loras))
    s = {i.id: i for i in nodes.WanAnimateModelLoader.define_schema().inputs}
    assert s["lora"].options == [loader.NO_LORA, "distill_4step.safetensors"] and s["lora"].optional
    assert s["mode"].options == ["exact", "fast"] and s["swap_blocks"].optional and s["t5_cpu"].optional
    assert loader.lora_spec(loader.NO_LORA, 1.0) == () and loader.lora_spec("distill_4step.safetensors", 0) == ()
    with pytest.raises(CheckpointError, match="not found in ComfyUI/models/loras/"):
        loader.lora_spec("missing.safetensors", 1.0)
    args = {"checkpoint": "Tiny-Animate", "ckpt_path": "", "dtype": "fp32", "attention": "auto",
            "gpus": 1, "fsdp": True, "relighting_lora": False}
    assert s["encoders"].options == ["auto", "parked", "gpu"] and s["encoders"].optional
    (model,) = run_node(nodes.WanAnimateModelLoader, **args, mode="fast", swap_blocks=3, t5_cpu=True,
                        lora="distill_4step.safetensors", lora_strength=0.8, encoders="gpu")
    assert (model.spec.mode, model.spec.swap_blocks, model.spec.t5_cpu) == ("fast", 3, True)
    assert model.spec.encoders == "gpu"
    assert model.spec.loras == ((str(loras / "distill_4step.safetensors"), 0.8),)
    (plain,) = run_node(nodes.WanAnimateModelLoader, **args)       # saved workflows without them
    assert (plain.spec.mode, plain.spec.swap_blocks, plain.spec.t5_cpu, plain.spec.loras,
            plain.spec.encoders) == ("exact", 0, False, (), "auto")
