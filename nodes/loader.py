"""Load Wan Animate Model: where the checkpoint is, how to place it (dtype, attention, GPUs).

The checkpoint is the official Wan2.2-Animate-14B folder. Two ways to name it:

- ``checkpoint``: a folder found by name in ComfyUI's model folders (inside ComfyUI):
  ``models/wan_animate/<folder>`` (the pack registers the ``wan_animate`` model folder;
  ``extra_model_paths.yaml`` may add more) and ``models/diffusion_models/<folder>``, plus the
  folder ``wan-animate setup download`` made (``$WAN_ANIMATE_CKPT_DIR`` or the Hugging Face
  cache);
- ``ckpt_path``: an absolute folder path; when not empty it wins over ``checkpoint``.

The model loads lazily: this node validates and returns a handle; the sampler loads weights
(once, reused while the settings are unchanged).
"""
from __future__ import annotations

import os
from pathlib import Path

from wan_animate.checkpoints import layout
from wan_animate.engine import ATTENTION, DTYPES, ModelSpec, load_model
from wan_animate.errors import CheckpointError, WanAnimateError

from .types import ModelType, check_ranges, io

MODEL_FOLDER = "wan_animate"
"""ComfyUI model folder name the pack registers: ``ComfyUI/models/wan_animate/``."""
USE_PATH = "(use ckpt_path)"
"""The ``checkpoint`` choice that means "the folder typed in ckpt_path"."""
MAX_GPUS = 8


def _is_official_folder(folder: Path) -> bool:
    return (folder / layout.DIT_CONFIG).is_file() and (folder / layout.DIT_INDEX).is_file()


def _comfy_model_roots() -> list[tuple[str, Path]]:
    """(folder name, path) of ComfyUI's model folders that may hold a checkpoint folder."""
    try:
        import folder_paths
    except ModuleNotFoundError as e:
        if e.name != "folder_paths":
            raise
        return []
    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))
    return [(key, Path(p)) for key in (MODEL_FOLDER, "diffusion_models")
            for p in folder_paths.get_folder_paths(key)]


def checkpoint_choices() -> dict[str, Path]:
    """Name -> folder of every official checkpoint folder found (see the module docstring)."""
    found: dict[str, Path] = {}
    for key, root in _comfy_model_roots():
        if not root.is_dir():
            continue
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and _is_official_folder(p)):
            found.setdefault(sub.name if key == MODEL_FOLDER else f"{key}/{sub.name}", sub)
    from wan_animate.checkpoints.manifest import default_checkpoint_dir

    default = default_checkpoint_dir()
    if default is not None and default.is_dir():
        name = "WAN_ANIMATE_CKPT_DIR" if os.environ.get("WAN_ANIMATE_CKPT_DIR") else "huggingface cache"
        found.setdefault(name, default)
    return found


def resolve_checkpoint(checkpoint: str, ckpt_path: str) -> Path:
    """The folder the two widgets name; raises CheckpointError naming what was looked at."""
    if ckpt_path.strip():
        folder = Path(ckpt_path.strip()).expanduser()
        if not folder.is_absolute():
            raise CheckpointError(f"ckpt_path must be an absolute folder path, got {ckpt_path!r}")
        if not folder.is_dir():
            raise CheckpointError(f"ckpt_path {folder} is not a folder; download the checkpoint "
                                  f"with `wan-animate setup download --local_dir {folder}`")
        return folder
    choices = checkpoint_choices()
    if checkpoint in choices:
        return choices[checkpoint]
    if checkpoint == USE_PATH:
        raise CheckpointError("checkpoint is set to (use ckpt_path) but ckpt_path is empty")
    raise CheckpointError(f"checkpoint {checkpoint!r} not found (found: {', '.join(choices) or 'none'}); "
                          f"put the official folder in ComfyUI/models/{MODEL_FOLDER}/ or set ckpt_path")


def checkpoint_inputs() -> list:
    """The two checkpoint widgets (shared with the Model Status node)."""
    names = list(checkpoint_choices())
    return [
        io.Combo.Input("checkpoint", options=names + [USE_PATH], default=(names or [USE_PATH])[0],
                       tooltip=f"Official Wan2.2-Animate-14B folder found in ComfyUI/models/{MODEL_FOLDER}/, "
                               "ComfyUI/models/diffusion_models/ or the wan-animate download cache. "
                               "Ignored when ckpt_path is set."),
        io.String.Input("ckpt_path", default="", multiline=False,
                        tooltip="Absolute path of an official Wan2.2-Animate-14B folder (config.json, "
                                "DiT shards, T5, CLIP, VAE). When not empty it is used instead of checkpoint."),
    ]


class WanAnimateModelLoader(io.ComfyNode):
    DISPLAY_NAME = "Load Wan Animate Model"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="WanAnimateModelLoader", display_name=cls.DISPLAY_NAME, category="WanAnimate/loaders",
            description="Choose the Wan2.2-Animate-14B checkpoint and how it runs; weights load on "
                        "first use and stay loaded while these settings are unchanged.",
            inputs=[
                *checkpoint_inputs(),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto",
                               tooltip="Weight dtype of the DiT and T5: auto = bf16 on GPU, fp32 on CPU."),
                io.Combo.Input("attention", options=list(ATTENTION), default="auto",
                               tooltip="Attention kernel (PyTorch SDPA backend); auto lets PyTorch pick."),
                io.Int.Input("gpus", default=1, min=1, max=MAX_GPUS, step=1,
                             tooltip="GPUs of the worker pool (sequence parallel + FSDP). Must divide "
                                     "the 40 attention heads: 1, 2, 4, 5 or 8."),
                io.Boolean.Input("fsdp", default=True,
                                 tooltip="With several GPUs, shard the DiT weights across them (FSDP2) "
                                         "instead of a full copy per GPU."),
                io.Boolean.Input("relighting_lora", default=False,
                                 tooltip="Merge relighting_lora.ckpt into the DiT (the official setting "
                                         "for replace mode: matches the character to the scene's light)."),
            ],
            outputs=[ModelType.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str | None = None, ckpt_path: str | None = None,
                        gpus: int | None = None) -> bool | str:
        if checkpoint is None or ckpt_path is None or gpus is None:
            return True                     # linked values are checked when the node runs
        try:
            check_ranges(cls, gpus=gpus)
            ModelSpec(str(resolve_checkpoint(checkpoint, ckpt_path)), gpus=gpus).validate()
        except WanAnimateError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, checkpoint: str, ckpt_path: str, dtype: str, attention: str, gpus: int,
                fsdp: bool, relighting_lora: bool) -> io.NodeOutput:
        spec = ModelSpec(ckpt_dir=str(resolve_checkpoint(checkpoint, ckpt_path)), gpus=gpus,
                         dtype=dtype, attention=attention, fsdp=fsdp,
                         use_relighting_lora=relighting_lora)
        return io.NodeOutput(load_model(spec))
