"""Load Wan Animate Model: where the checkpoint is, how to place it (dtype, attention, GPUs).

The checkpoint is the official Wan2.2-Animate-14B folder. Two ways to name it:

- ``checkpoint``: a folder found by name in ComfyUI's model folders (inside ComfyUI):
  ``models/wan_animate/<folder>`` (the pack registers the ``wan_animate`` model folder;
  ``extra_model_paths.yaml`` may add more) and ``models/diffusion_models/<folder>``, plus the
  folder ``wan-animate setup download`` made (``$WAN_ANIMATE_CKPT_DIR`` or the Hugging Face
  cache);
- ``ckpt_path``: an absolute folder path; when not empty it wins over ``checkpoint``.

Or the ComfyUI single files (optional inputs, listed from ComfyUI's model folders): the DiT
(``diffusion_models``), umT5 (``text_encoders``), CLIP vision (``clip_vision``), VAE (``vae``)
and the relighting LoRA (``loras``); "(official folder)" means "from the checkpoint folder".
The four networks come all from single files or all from the folder. The umT5 tokenizer is
``tokenizer_path``, else the checkpoint folder's, else searched (``comfy_bundle.find_tokenizer``).

The model loads lazily: this node validates and returns a handle; the sampler loads weights
(once, reused while the settings are unchanged).
"""
from __future__ import annotations

import os
from pathlib import Path

from wan_animate.checkpoints import layout
from wan_animate.engine import ATTENTION, DTYPES, MODES, ModelSpec, load_model
from wan_animate.errors import CheckpointError, WanAnimateError

from .types import ModelType, check_ranges, io

MODEL_FOLDER = "wan_animate"
"""ComfyUI model folder name the pack registers: ``ComfyUI/models/wan_animate/``."""
USE_PATH = "(use ckpt_path)"
"""The ``checkpoint`` choice that means "the folder typed in ckpt_path"."""
MAX_GPUS = 8
OFFICIAL = "(official folder)"
"""The single-file choice that means "take this network from the checkpoint folder"."""
SINGLE_FILES = {"dit_file": ("diffusion_models", "Wan2.2-Animate DiT, e.g. wan2.2_animate_14B_bf16 "
                             "(bf16, fp16, fp8 or fp8-scaled)"),
                "t5_file": ("text_encoders", "umT5-XXL text encoder, e.g. umt5_xxl_fp8_e4m3fn_scaled"),
                "clip_file": ("clip_vision", "CLIP vision encoder: clip_vision_h"),
                "vae_file": ("vae", "Wan 2.1 VAE: wan_2.1_vae"),
                "relight_file": ("loras", "relighting LoRA used when relighting_lora is on: "
                                 "wan2.2_animate_14B_relight_lora_bf16")}


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


def single_file_names(kind: str) -> list[str]:
    """File names ComfyUI lists in its ``kind`` model folder (none outside ComfyUI)."""
    try:
        import folder_paths
    except ModuleNotFoundError as e:
        if e.name != "folder_paths":
            raise
        return []
    return list(folder_paths.get_filename_list(kind))


NO_LORA = "(none)"


def lora_spec(name: str | None, strength: float) -> tuple[tuple[str, float], ...]:
    """The loader's LoRA widgets as ``ModelSpec.loras`` (empty for "(none)" or strength 0)."""
    if name in (None, "", NO_LORA) or strength == 0:
        return ()
    return ((single_file_path("loras", name), float(strength)),)


def single_file_path(kind: str, name: str | None) -> str | None:
    """The full path of a listed file, or None for "(official folder)"."""
    if name in (None, OFFICIAL, ""):
        return None
    import folder_paths

    path = folder_paths.get_full_path(kind, name)
    if path is None:
        raise CheckpointError(f"{name!r} not found in ComfyUI/models/{kind}/")
    return path


def single_file_inputs() -> list:
    return [io.Combo.Input(k, options=[OFFICIAL, *single_file_names(kind)], default=OFFICIAL,
                           optional=True, tooltip=f"{what}, from ComfyUI/models/{kind}/. "
                                                  f"{OFFICIAL}: from the checkpoint folder.")
            for k, (kind, what) in SINGLE_FILES.items()] + [
        io.String.Input("tokenizer_path", default="", optional=True,
                        tooltip="Folder of the google/umt5-xxl tokenizer (tokenizer.json), needed with "
                                "a single-file umT5. Empty: the checkpoint folder's, else searched; "
                                "`wan-animate setup download --with core --file "
                                "google/umt5-xxl/tokenizer.json` fetches it.")]


def build_spec(checkpoint: str, ckpt_path: str, files: dict[str, str | None], tokenizer_path: str = "",
               **kw) -> ModelSpec:
    """The model spec of the widgets: the checkpoint folder or the four single files."""
    paths = {k: single_file_path(SINGLE_FILES[k][0], files.get(k)) for k in SINGLE_FILES}
    nets = [paths[k] for k in ("dit_file", "t5_file", "clip_file", "vae_file")]
    if not any(nets):
        if paths["relight_file"]:
            raise CheckpointError("relight_file is a single file: use it with the four single files "
                                  "(the checkpoint folder has its own relighting_lora.ckpt)")
        return ModelSpec(str(resolve_checkpoint(checkpoint, ckpt_path)), **kw)
    if not all(nets):
        unset = [k for k, p in zip(("dit_file", "t5_file", "clip_file", "vae_file"), nets) if not p]
        raise CheckpointError(f"set all four single files (DiT, umT5, CLIP vision, VAE) or none; "
                              f"{', '.join(unset)} still say {OFFICIAL}")
    tok = tokenizer_path.strip() or None
    if tok is None:
        try:
            folder = resolve_checkpoint(checkpoint, ckpt_path) / layout.T5_TOKENIZER_DIR
            tok = str(folder) if folder.is_dir() else None
        except CheckpointError:
            tok = None                       # searched for by the loader
    return ModelSpec("", comfy_files=tuple(nets), tokenizer_dir=tok, relight_file=paths["relight_file"], **kw)


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
                               tooltip="Self-attention kernel. auto: FlashAttention-3 on H100/H200 when "
                                       "installed (fastest exact), else PyTorch SDPA preferring cuDNN."),
                io.Int.Input("gpus", default=1, min=1, max=MAX_GPUS, step=1,
                             tooltip="GPUs of the worker pool (sequence parallel + FSDP). Must divide "
                                     "the 40 attention heads: 1, 2, 4, 5 or 8."),
                io.Boolean.Input("fsdp", default=True,
                                 tooltip="With several GPUs, shard the DiT weights across them (FSDP2) "
                                         "instead of a full copy per GPU."),
                io.Boolean.Input("relighting_lora", default=False,
                                 tooltip="Merge relighting_lora.ckpt into the DiT (the official setting "
                                         "for replace mode: matches the character to the scene's light)."),
                *single_file_inputs(),
                io.Combo.Input("mode", options=list(MODES), default="exact", optional=True,
                               tooltip="exact: bf16, the official numerics. fast: fp8 linears in the "
                                       "DiT blocks + fp8 attention (FA3), ~1.4x faster per step on "
                                       "H100/H200 at a small quality cost; one GPU only."),
                io.Int.Input("swap_blocks", default=0, min=0, max=40, step=1, optional=True,
                             tooltip="GPUs with little memory (24-48 GB): DiT blocks kept in host "
                                     "RAM and streamed to the GPU each step, one block ahead (on "
                                     "several GPUs each GPU's shard of them). 0 = as the memory "
                                     "plan says (memory auto), or all on the GPU."),
                io.Boolean.Input("t5_cpu", default=False, optional=True,
                                 tooltip="Keep the 11 GB umT5 text encoder on the CPU (the prompt "
                                         "is encoded there once per video)."),
                io.Combo.Input("lora", options=[NO_LORA, *single_file_names("loras")], default=NO_LORA,
                               optional=True,
                               tooltip="A DiT LoRA from ComfyUI/models/loras/ (ComfyUI, kohya, "
                                       "diffusers or PEFT keys), merged into the weights at load: "
                                       "e.g. a 4-step distillation LoRA (then steps 4, guidance 1)."),
                io.Float.Input("lora_strength", default=1.0, min=-4.0, max=4.0, step=0.05, optional=True,
                               tooltip="Strength of that LoRA (1.0 = as trained)."),
                io.Combo.Input("encoders", options=["auto", "parked", "gpu"], default="auto", optional=True,
                               tooltip="umT5 + CLIP (11.8 GB) between encodes. auto = parked on a GPU: "
                                       "kept in host RAM, copied in once per new prompt / reference "
                                       "(~0.3 s), so the GPU has that room while denoising and decoding. "
                                       "gpu: always on the GPU."),
                io.Combo.Input("vae", options=["auto", "whole", "split", "bands"], default="auto",
                               optional=True,
                               tooltip="Where the VAE encodes / decodes; the output is the same in "
                                       "every mode. auto: split by rows over several GPUs (each "
                                       "GPU ~1/N of the 19 GB a 720p decode needs); on one GPU "
                                       "whole, or in 8 bands when memory is short (4.2 GB). "
                                       "bands: one GPU only."),
                io.Combo.Input("memory", options=["auto", "off"], default="auto", optional=True,
                               tooltip="auto: with swap_blocks 0, swap as many DiT blocks as the "
                                       "free memory of the GPUs needs for a 1280x720, 77-frame "
                                       "clip; the plan (per GPU: resident, expected peak) is "
                                       "printed in the console and the Model Status node. off: "
                                       "no swapping unless swap_blocks says so."),
            ],
            outputs=[ModelType.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str | None = None, ckpt_path: str | None = None,
                        gpus: int | None = None, dit_file: str | None = None, t5_file: str | None = None,
                        clip_file: str | None = None, vae_file: str | None = None,
                        tokenizer_path: str | None = None) -> bool | str:
        if checkpoint is None or ckpt_path is None or gpus is None:
            return True                     # linked values are checked when the node runs
        files = {"dit_file": dit_file, "t5_file": t5_file, "clip_file": clip_file, "vae_file": vae_file}
        try:
            check_ranges(cls, gpus=gpus)
            build_spec(checkpoint, ckpt_path, files, tokenizer_path or "", gpus=gpus).validate()
        except WanAnimateError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, checkpoint: str, ckpt_path: str, dtype: str, attention: str, gpus: int,
                fsdp: bool, relighting_lora: bool, dit_file: str = OFFICIAL, t5_file: str = OFFICIAL,
                clip_file: str = OFFICIAL, vae_file: str = OFFICIAL, relight_file: str = OFFICIAL,
                tokenizer_path: str = "", mode: str = "exact", swap_blocks: int = 0,
                t5_cpu: bool = False, lora: str = "(none)", lora_strength: float = 1.0,
                encoders: str = "auto", memory: str = "auto", vae: str = "auto") -> io.NodeOutput:
        files = {"dit_file": dit_file, "t5_file": t5_file, "clip_file": clip_file, "vae_file": vae_file,
                 "relight_file": relight_file}
        spec = build_spec(checkpoint, ckpt_path, files, tokenizer_path, gpus=gpus, dtype=dtype,
                          attention=attention, fsdp=fsdp, use_relighting_lora=relighting_lora,
                          mode=mode, swap_blocks=swap_blocks, t5_cpu=t5_cpu,
                          loras=lora_spec(lora, lora_strength), encoders=encoders, memory=memory,
                          vae=vae)
        return io.NodeOutput(load_model(spec))
