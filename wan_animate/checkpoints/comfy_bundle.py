"""Load the networks from the single files ComfyUI users already have (no official folder).

Files (names as ComfyUI's model folders hold them)::

    models/diffusion_models/wan2.2_animate_14B_bf16.safetensors   (or fp8 / fp8-scaled)
    models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors   (or bf16)
    models/clip_vision/clip_vision_h.safetensors
    models/vae/wan_2.1_vae.safetensors
    models/loras/wan2.2_animate_14B_relight_lora_bf16.safetensors (optional, replace mode)

Keys are converted to the official names by :mod:`comfy_layout` (fp8 weights dequantized) and
loaded strictly with :func:`load.load_into` into networks built on meta, exactly as
:mod:`official` loads the official folder. Sizes: the official 14B defaults; a file may carry
its own config as JSON in the safetensors metadata ``wan_animate_config`` (tiny test files do).
The DiT's shapes are checked against the config before loading, with an error naming them.

ComfyUI's umT5 files hold no ``tokenizer.json``: the ``google/umt5-xxl`` tokenizer folder is
taken from ``ComfyFiles.tokenizer`` or found in known places (:func:`find_tokenizer`).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from wan_animate.checkpoints import fp8 as fp8mod
from wan_animate.checkpoints import layout
from wan_animate.checkpoints.comfy_layout import (detect_layout, file_dtypes, plan_conversion,
                                                  read_single_file)
from wan_animate.checkpoints.load import load_into
from wan_animate.errors import CheckpointError
from wan_animate.models.bundle import ModelBundle
from wan_animate.models.clip import CLIPVisionConfig, CLIPVisionEncoder
from wan_animate.models.config import DiTConfig
from wan_animate.models.dit import AnimateDiT
from wan_animate.models.t5 import T5Config, T5Encoder
from wan_animate.models.tokenizer import TOKENIZER_FILE, UMT5Tokenizer
from wan_animate.models.vae import VAEConfig, WanVAE

CONFIG_METADATA_KEY = "wan_animate_config"
"""safetensors metadata key: JSON config of the network (DiT: config.json content; others: sizes)."""
OFFICIAL_HEAD_DIM = 128
TOKENIZER_DOWNLOAD = f"wan-animate setup download --with core --file {layout.T5_TOKENIZER_DIR}/{TOKENIZER_FILE}"
"""Downloads only the tokenizer (a few MB) into the Hugging Face cache, where it is found."""
_TOKENIZER_REPO = "google/umt5-xxl"


@dataclass(frozen=True)
class ComfyFiles:
    """Paths of ComfyUI single files. ``tokenizer``: a ``google/umt5-xxl`` folder (optional)."""

    dit: str
    t5: str
    clip: str
    vae: str
    tokenizer: str | None = None

    def named(self) -> dict[str, str]:
        return {"dit": self.dit, "t5": self.t5, "clip": self.clip, "vae": self.vae}

    def validate(self) -> None:
        """Each file exists and holds the network of its slot (cheap: safetensors headers only)."""
        from safetensors import safe_open

        for net, path in self.named().items():
            if not path or not Path(path).is_file():
                raise CheckpointError(f"{net} single file not found: {path!r}")
            if Path(path).suffix == ".safetensors":
                try:
                    with safe_open(str(path), framework="pt", device="cpu") as f:
                        keys = list(f.keys())
                except Exception as e:  # safetensors raises several types for corrupt headers
                    raise CheckpointError(f"cannot read {path}: {e}. The file is corrupt or "
                                          f"incomplete; download it again.") from e
                detect_layout(keys, str(path), expect=net)
        if self.tokenizer and not (Path(self.tokenizer) / TOKENIZER_FILE).is_file():
            raise CheckpointError(f"tokenizer folder {self.tokenizer} has no {TOKENIZER_FILE}; give a "
                                  f"google/umt5-xxl folder or run `{TOKENIZER_DOWNLOAD}`")


# ---- configs -------------------------------------------------------------------------------------
def file_config(path: str | Path) -> dict[str, Any] | None:
    """The JSON config in a safetensors file's metadata (None when absent or not safetensors)."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for corrupt headers
        raise CheckpointError(f"cannot read {path}: {e}. The file is corrupt or incomplete; "
                              f"download it again.") from e
    raw = meta.get(CONFIG_METADATA_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata {CONFIG_METADATA_KEY} is not valid JSON ({e})") from e


def declared_dit_config(path: str | Path) -> DiTConfig:
    """The DiT config a file declares in its metadata, else the official 14B one (no shape check)."""
    meta = file_config(path)
    if meta is None:
        return DiTConfig()
    try:
        return DiTConfig.from_dict(meta)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: metadata {CONFIG_METADATA_KEY} is not a DiT config ({e})") from e


def file_metadata(config: DiTConfig | T5Config | CLIPVisionConfig | VAEConfig) -> dict[str, str]:
    """safetensors metadata that makes :func:`load_comfy_bundle` use ``config`` (tests, tiny files)."""
    data = config.to_dict() if isinstance(config, DiTConfig) else asdict(config)
    return {CONFIG_METADATA_KEY: json.dumps(data)}


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Official DiT key -> shape, from the header only (prefix stripped)."""
    from safetensors import safe_open

    if path.suffix != ".safetensors":
        return {k: tuple(v.shape) for k, v in read_single_file(path, "dit").state.items()}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        dtypes = file_dtypes(f)
        plan = plan_conversion(dtypes, str(path), "dit", f.get_tensor, f.metadata() or {})
        return {o: tuple(f.get_slice(r.file_keys[0]).get_shape()) for o, r in plan.recipes.items()}


def dit_config(path: str | Path) -> DiTConfig:
    """The DiT config of a single file: its metadata config, else the official 14B one, checked
    against the file's shapes (width, depth, FFN, input channels) with a clear error."""
    path = Path(path)
    cfg = declared_dit_config(path)
    shapes = _shapes(path)
    pe = shapes.get("patch_embedding.weight")
    if pe is None:
        raise CheckpointError(f"{path}: no patch_embedding.weight; not a Wan2.2-Animate DiT")
    layers = len({m[1] for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))})
    found = {"dim": pe[0], "in_dim": pe[1], "num_layers": layers,
             "ffn_dim": shapes.get("blocks.0.ffn.0.weight", (None,))[0]}
    want = {k: getattr(cfg, k) for k in found}
    if found != want:
        diff = ", ".join(f"{k} {found[k]} (expected {want[k]})" for k in found if found[k] != want[k])
        raise CheckpointError(f"{path}: this DiT's shapes do not match the Wan2.2-Animate-14B "
                              f"architecture: {diff}. Use wan2.2_animate_14B_*.safetensors")
    return cfg


def _sized(cls: type, path: str | Path) -> Any:
    sizes = file_config(path) or {}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()})


# ---- tokenizer -----------------------------------------------------------------------------------
def tokenizer_candidates(t5_file: str | Path | None = None) -> list[Path]:
    """Folders searched for the umT5 tokenizer, in order."""
    out: list[Path] = []
    if t5_file:
        here = Path(t5_file).parent
        out += [here / layout.T5_TOKENIZER_DIR, here / "umt5-xxl", here / "umt5_xxl"]
    env = os.environ.get("WAN_ANIMATE_CKPT_DIR")
    if env:
        out.append(Path(env).expanduser() / layout.T5_TOKENIZER_DIR)
    from wan_animate.checkpoints.manifest import default_checkpoint_dir

    default = default_checkpoint_dir()
    if default is not None:
        out.append(default / layout.T5_TOKENIZER_DIR)
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / ("models--" + _TOKENIZER_REPO.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        out.append(repo / "snapshots" / ref.read_text().strip())
    return list(dict.fromkeys(out))


def find_tokenizer(explicit: str | Path | None = None, t5_file: str | Path | None = None) -> Path:
    """The ``google/umt5-xxl`` tokenizer folder: ``explicit``, else the first known place that has
    ``tokenizer.json``; raises :class:`CheckpointError` with the download command otherwise."""
    if explicit:
        folder = Path(explicit).expanduser()
        if not (folder / TOKENIZER_FILE).is_file():
            raise CheckpointError(f"tokenizer folder {folder} has no {TOKENIZER_FILE}; give a "
                                  f"google/umt5-xxl folder or run `{TOKENIZER_DOWNLOAD}`")
        return folder
    tried = tokenizer_candidates(t5_file)
    for folder in tried:
        if (folder / TOKENIZER_FILE).is_file():
            return folder
    raise CheckpointError(
        "ComfyUI's umT5 file has no tokenizer and no google/umt5-xxl tokenizer folder was found "
        f"(looked in: {', '.join(map(str, tried)) or 'nowhere'}). Download just the tokenizer "
        f"(a few MB) with `{TOKENIZER_DOWNLOAD}`, or give the folder holding {TOKENIZER_FILE} "
        f"(tokenizer input / ModelSpec.tokenizer_dir).")


# ---- networks ------------------------------------------------------------------------------------
def _load(model: torch.nn.Module, path: str | Path, expect: str, device: torch.device | str,
          dtype: torch.dtype, **kw: Any) -> torch.nn.Module:
    conv = read_single_file(path, expect=expect, dtype=dtype, device="cpu")
    for w in conv.warnings:
        print(f"[wan-animate] {Path(path).name}: {w}", flush=True)
    load_into(model, conv.state, str(path), device=device, dtype=fp8mod.dtype_rule(dtype), **kw)
    return model.eval()


def load_comfy_dit(path: str | Path, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.bfloat16) -> AnimateDiT:
    """The DiT from a ComfyUI single file (bf16 / fp16 / fp8 / fp8-scaled)."""
    with torch.device("meta"):
        model = AnimateDiT(dit_config(path))
    return _load(model, path, "dit", device, dtype, ignore_missing=layout.is_rebuildable_dit_key)


def load_comfy_t5(path: str | Path, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.bfloat16) -> T5Encoder:
    with torch.device("meta"):
        model = T5Encoder(_sized(T5Config, path))
    return _load(model, path, "t5", device, dtype)


def load_comfy_clip(path: str | Path, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float16) -> CLIPVisionEncoder:
    with torch.device("meta"):
        model = CLIPVisionEncoder(_sized(CLIPVisionConfig, path))
    return _load(model, path, "clip", device, dtype)


def load_comfy_vae(path: str | Path, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> WanVAE:
    with torch.device("meta"):
        model = WanVAE(_sized(VAEConfig, path))
    return _load(model, path, "vae", device, dtype)


def lora_list(use_relighting_lora: bool, relight_file: str | None,
              loras: Iterable[tuple[str, float]] = ()) -> tuple[tuple[str, float], ...]:
    """The LoRAs to merge: the relighting LoRA file first (strength 1: alpha = rank), then ``loras``."""
    loras = tuple((str(p), float(s)) for p, s in loras)
    if not use_relighting_lora:
        return loras
    if not relight_file:
        raise CheckpointError("relighting LoRA asked for but no file given: with ComfyUI single files "
                              "pick models/loras/wan2.2_animate_14B_relight_lora_bf16.safetensors")
    if not Path(relight_file).is_file():
        raise CheckpointError(f"relighting LoRA file not found: {relight_file}; put "
                              f"wan2.2_animate_14B_relight_lora_bf16.safetensors in ComfyUI/models/loras/ "
                              f"and pick it as relight_file, or turn use_relighting_lora off")
    return ((str(relight_file), 1.0), *loras)


def load_comfy_bundle(files: ComfyFiles, device: torch.device | str = "cpu", precision: Any = None,
                      use_relighting_lora: bool = False, relight_file: str | None = None,
                      loras: tuple[tuple[str, float], ...] = (), with_dit: bool = True,
                      dit_device: torch.device | str | None = None,
                      t5_device: torch.device | str | None = None,
                      clip_device: torch.device | str | None = None) -> ModelBundle:
    """Every network from ComfyUI single files, ready for :func:`generate`.

    ``precision``: :class:`official.Precision` (default: for the device). ``with_dit=False``
    leaves the DiT on meta (the worker pool loads its own shards). ``dit_device`` /
    ``t5_device`` / ``clip_device``: where those load instead of ``device``.
    """
    from wan_animate.checkpoints.official import Precision, apply_loras

    files.validate()
    device = torch.device(device)
    p = precision or Precision.for_device(device)
    all_loras = lora_list(use_relighting_lora, relight_file, loras)
    tokenizer = UMT5Tokenizer(find_tokenizer(files.tokenizer, files.t5))
    if with_dit:
        dit = load_comfy_dit(files.dit, dit_device or device, p.dit)
        apply_loras(dit, all_loras)
    else:
        with torch.device("meta"):
            dit = AnimateDiT(dit_config(files.dit))
    return ModelBundle(dit=dit, vae=load_comfy_vae(files.vae, device, p.vae),
                       t5=load_comfy_t5(files.t5, t5_device or device, p.t5),
                       clip=load_comfy_clip(files.clip, clip_device or device, p.clip),
                       tokenizer=tokenizer, device=device, dtype=p.batch)


# ---- row access for the worker pool --------------------------------------------------------------
class SingleFileDiTSource:
    """A ``distributed.loading.TensorSource`` over a ComfyUI DiT file: official key names, rows
    read from the memory-mapped file, fp8 rows dequantized (scalar or per-row scales) to ``dtype``.
    """

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.bfloat16) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        if self.path.suffix != ".safetensors":
            raise CheckpointError(f"{self.path}: the worker pool reads DiT single files in the "
                                  f".safetensors format only")
        try:
            self._f = safe_open(str(self.path), framework="pt", device="cpu")
        except Exception as e:  # safetensors raises several types for corrupt headers
            raise CheckpointError(f"cannot read {self.path}: {e}; download it again") from e
        dtypes = file_dtypes(self._f)
        self.plan = plan_conversion(dtypes, str(self.path), "dit", self._f.get_tensor,
                                    self._f.metadata() or {})
        odd = [o for o, r in self.plan.recipes.items() if r.op != "copy" or len(r.file_keys) != 1]
        if odd:
            raise CheckpointError(f"{self.path}: key {odd[0]!r} needs a conversion the row reader "
                                  f"does not do")
        self.dtype = dtype

    def keys(self) -> Iterable[str]:
        return self.plan.recipes.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._f.get_slice(self.plan.recipes[key].file_keys[0]).get_shape())

    def read(self, key: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        fk = self.plan.recipes[key].file_keys[0]
        whole = start is None or not self.shape(key)
        t = self._f.get_tensor(fk) if whole else self._f.get_slice(fk)[start:stop]
        if t.dtype not in fp8mod.FP8_DTYPES:
            return t
        sk = self.plan.fp8.scales.get(fk)
        scale = self._f.get_tensor(sk) if sk else None
        if scale is not None and scale.numel() > 1 and not whole:
            scale = scale.reshape(scale.shape[0], -1)[start:stop]     # per output row: [out, 1] rows
        return fp8mod.dequantize(t, scale, fp8mod.storage_dtype(key, self.dtype), fk)
