"""The official checkpoint folder (Wan-AI/Wan2.2-Animate-14B): file names, download groups, features.

Everything here is a constant or a pure function of a folder listing; nothing is read or
downloaded at import time. Facts: ``wan-animate-facts.md`` §1.

Folder layout (paths relative to the checkpoint folder, ``ckpt_dir``)::

    config.json                                         DiT config (diffusers style)
    diffusion_pytorch_model.safetensors.index.json      DiT shard index
    diffusion_pytorch_model-0000{1..4}-of-00004.safetensors   DiT weights, bf16, 34.5 GB
    models_t5_umt5-xxl-enc-bf16.pth                     umT5-XXL encoder, bf16, 11.4 GB
    google/umt5-xxl/                                    umT5 tokenizer files
    models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth   CLIP (both towers), fp32, 4.8 GB
    Wan2.1_VAE.pth                                      Wan 2.1 VAE, fp32, 0.5 GB
    relighting_lora.ckpt                                relighting LoRA (PEFT keys under "state_dict")
    process_checkpoint/det/yolov10m.onnx                person detector
    process_checkpoint/pose2d/vitpose_h_wholebody.onnx/ ViTPose-H (a folder: end2end.onnx + weights)
    process_checkpoint/sam2/sam2_hiera_large.pt         SAM 2.0 Hiera-L (replace-mode masks)
    process_checkpoint/FLUX.1-Kontext-dev/              diffusers FLUX Kontext (``--use_flux``), optional
    process_checkpoint/mediapipe/*.task|*.tflite        MediaPipe Tasks models (ours), optional
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

# ---- the official repository ------------------------------------------------------------------
REPO_ID = "Wan-AI/Wan2.2-Animate-14B"
DEFAULT_REVISION = "main"

DIT_CONFIG = "config.json"
DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIT_SHARD_PATTERN = "diffusion_pytorch_model-{i:05d}-of-{n:05d}.safetensors"
"""Formatted with ``i`` (1-based shard number) and ``n`` (shard count)."""
DIT_NUM_SHARDS = 4
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER_DIR = "google/umt5-xxl"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
CLIP_TOKENIZER_DIR = "xlm-roberta-large"
"""Loaded by the official CLIP wrapper but never used by Animate; we do not need it."""
VAE_FILE = "Wan2.1_VAE.pth"
RELIGHT_LORA_FILE = "relighting_lora.ckpt"
RELIGHT_LORA_WRAPPER_KEY = "state_dict"

PROCESS_DIR = "process_checkpoint"
DET_FILE = f"{PROCESS_DIR}/det/yolov10m.onnx"
POSE2D_DIR = f"{PROCESS_DIR}/pose2d/vitpose_h_wholebody.onnx"
POSE2D_ONNX = f"{POSE2D_DIR}/end2end.onnx"
SAM2_FILE = f"{PROCESS_DIR}/sam2/sam2_hiera_large.pt"
FLUX_DIR = f"{PROCESS_DIR}/FLUX.1-Kontext-dev"
MEDIAPIPE_DIR = f"{PROCESS_DIR}/mediapipe"

MANIFEST_NAME = "wan_animate_manifest.json"
"""Written into every folder made by ``setup download`` or ``make-tiny-checkpoint``."""


def dit_shard_name(i: int, n: int = DIT_NUM_SHARDS) -> str:
    """File name of DiT shard ``i`` (1-based) of ``n``."""
    return DIT_SHARD_PATTERN.format(i=i, n=n)


def dit_shard_names(folder: str | Path | None = None) -> list[str]:
    """The DiT shard files: from the folder's index when it is readable, else the official 4."""
    if folder is not None:
        index = Path(folder) / DIT_INDEX
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            return sorted(set(weight_map.values()))
        except (OSError, KeyError, TypeError, ValueError):
            pass
    return [dit_shard_name(i) for i in range(1, DIT_NUM_SHARDS + 1)]


def is_rebuildable_dit_key(key: str) -> bool:
    """DiT keys a loader may rebuild instead of reading: the motion encoder's blur kernels.

    They are persistent buffers (always outer([1, 3, 3, 1]) / 64) that some single-file
    repackages leave out (facts §2.2).
    """
    return key.startswith("motion_encoder.") and key.endswith(".kernel")


# ---- features ----------------------------------------------------------------------------------
FEATURES: dict[str, str] = {
    "animate": "animate mode (generate)",
    "replace": "replace mode (generate --replace_flag)",
    "relighting": "relighting LoRA in replace mode (--use_relighting_lora)",
    "pose-official": "official keypoints (YOLOv10m + ViTPose-H); MediaPipe is used without them",
    "mask-sam2": "SAM2 character masks in replace mode; MediaPipe segmentation is used without it",
    "flux-edit": "--use_flux editing of the reference/template (FLUX.1 Kontext)",
    "mediapipe-tasks": "MediaPipe Tasks models (needed by mediapipe >= 0.10.30, which ships none)",
}
_GENERATE = ("animate", "replace", "relighting")


@dataclass(frozen=True)
class Component:
    """One network or model file of the folder and what it enables.

    ``paths`` are files, or folders when they end with ``/``; ``required`` components are needed
    for any generation.
    """

    name: str
    description: str
    paths: tuple[str, ...]
    enables: tuple[str, ...]
    required: bool
    group: str


COMPONENTS: tuple[Component, ...] = (
    Component("dit", "Animate DiT (config, shard index, safetensors shards)",
              (DIT_CONFIG, DIT_INDEX, "<dit shards>"), _GENERATE, True, "core"),
    Component("t5", "umT5-XXL text encoder", (T5_FILE,), _GENERATE, True, "core"),
    Component("t5-tokenizer", "umT5 tokenizer", (T5_TOKENIZER_DIR + "/",), _GENERATE, True, "core"),
    Component("clip", "CLIP ViT-H/14 image encoder", (CLIP_FILE,), _GENERATE, True, "core"),
    Component("vae", "Wan 2.1 VAE", (VAE_FILE,), _GENERATE, True, "core"),
    Component("relighting-lora", "relighting LoRA", (RELIGHT_LORA_FILE,), ("relighting",), False,
              "relight"),
    Component("det", "YOLOv10m person detector", (DET_FILE,), ("pose-official",), False, "preprocess"),
    Component("pose2d", "ViTPose-H whole-body (onnx folder)", (POSE2D_DIR + "/",), ("pose-official",),
              False, "preprocess"),
    Component("sam2", "SAM 2.0 Hiera-L", (SAM2_FILE,), ("mask-sam2",), False, "sam2"),
    Component("flux", "FLUX.1 Kontext [dev] (diffusers folder)", (FLUX_DIR + "/",), ("flux-edit",),
              False, "flux"),
    Component("mediapipe", "MediaPipe Tasks models", (MEDIAPIPE_DIR + "/",), ("mediapipe-tasks",),
              False, "mediapipe"),
)


def component(name: str) -> Component:
    for c in COMPONENTS:
        if c.name == name:
            return c
    raise KeyError(f"unknown component {name!r}; known: {', '.join(c.name for c in COMPONENTS)}")


def component_files(comp: Component, folder: str | Path | None = None) -> list[str]:
    """Concrete file/folder paths of a component (DiT shards read from the folder's index)."""
    out: list[str] = []
    for p in comp.paths:
        out.extend(dit_shard_names(folder) if p == "<dit shards>" else [p])
    return out


def component_of(path: str) -> Component | None:
    """The component a relative path belongs to (files inside component folders included)."""
    for comp in COMPONENTS:
        for p in comp.paths:
            if p == "<dit shards>":
                if fnmatch.fnmatch(path, "diffusion_pytorch_model-*-of-*.safetensors"):
                    return comp
            elif p.endswith("/") and path.startswith(p):
                return comp
            elif path == p:
                return comp
    return None


def disabled_features(missing: list[str] | tuple[str, ...]) -> list[str]:
    """Features lost when the named components are missing or corrupt (in FEATURES order)."""
    lost = {f for name in missing for f in component(name).enables}
    return [f for f in FEATURES if f in lost]


# ---- download groups ---------------------------------------------------------------------------
@dataclass(frozen=True)
class UrlFile:
    """A file fetched from a plain URL (no hub metadata: size from HEAD, sha256 computed locally)."""

    path: str
    url: str


@dataclass(frozen=True)
class Source:
    """Where a group's files come from.

    ``repo_id`` + ``include``/``exclude`` (fnmatch patterns on repo paths) for a hub repository,
    placed under ``dest_prefix`` in the checkpoint folder; or ``urls`` for plain downloads.
    ``repo_id=None`` with no urls means the official repository.
    """

    repo_id: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    dest_prefix: str = ""
    strip_prefix: str = ""
    urls: tuple[UrlFile, ...] = ()
    gated: bool = False


@dataclass(frozen=True)
class Group:
    """A unit of ``setup download --with``; ``sources`` are alternatives tried in order
    (the first one whose patterns match files in its repository is used)."""

    name: str
    description: str
    approx_gb: float
    sources: tuple[Source, ...] = field(default_factory=tuple)


_MP = "https://storage.googleapis.com/mediapipe-models"
GROUPS: dict[str, Group] = {g.name: g for g in (
    Group("core", "DiT, umT5 + tokenizer, CLIP, VAE, config: needed to generate", 51.0, (
        Source(include=(DIT_CONFIG, "diffusion_pytorch_model*.safetensors*", T5_FILE,
                        T5_TOKENIZER_DIR + "/*", CLIP_FILE, VAE_FILE)),)),
    Group("relight", "relighting LoRA for replace mode", 1.5, (
        Source(include=(RELIGHT_LORA_FILE,)),)),
    Group("preprocess", "official pose models (YOLOv10m, ViTPose-H)", 2.6, (
        Source(include=(f"{PROCESS_DIR}/det/*", f"{PROCESS_DIR}/pose2d/*")),)),
    Group("sam2", "SAM 2.0 Hiera-L for replace-mode masks", 0.9, (
        Source(include=(f"{PROCESS_DIR}/sam2/*",)),
        Source(repo_id="facebook/sam2-hiera-large", include=("sam2_hiera_large.pt",),
               dest_prefix=f"{PROCESS_DIR}/sam2/"),)),
    Group("flux", "FLUX.1 Kontext [dev] for --use_flux (gated: accept its licence first)", 34.0, (
        Source(repo_id="black-forest-labs/FLUX.1-Kontext-dev", gated=True,
               include=("model_index.json", "scheduler/*", "text_encoder/*", "text_encoder_2/*",
                        "tokenizer/*", "tokenizer_2/*", "transformer/*", "vae/*"),
               dest_prefix=FLUX_DIR + "/"),)),
    Group("mediapipe", "MediaPipe Tasks models (pose, face, hands, selfie segmentation)", 0.04, (
        Source(urls=(
            UrlFile(f"{MEDIAPIPE_DIR}/pose_landmarker_heavy.task",
                    f"{_MP}/pose_landmarker/pose_landmarker_heavy/float16/latest/pose_landmarker_heavy.task"),
            UrlFile(f"{MEDIAPIPE_DIR}/face_landmarker.task",
                    f"{_MP}/face_landmarker/face_landmarker/float16/latest/face_landmarker.task"),
            UrlFile(f"{MEDIAPIPE_DIR}/hand_landmarker.task",
                    f"{_MP}/hand_landmarker/hand_landmarker/float16/latest/hand_landmarker.task"),
            UrlFile(f"{MEDIAPIPE_DIR}/selfie_segmenter.tflite",
                    f"{_MP}/image_segmenter/selfie_segmenter/float16/latest/selfie_segmenter.tflite"),
        )),)),
)}
DEFAULT_GROUPS = ("core", "relight")
QUICK_GROUPS = ("core", "relight", "preprocess", "sam2")


def parse_groups(spec: str | list[str] | tuple[str, ...] | None,
                 default: tuple[str, ...] = DEFAULT_GROUPS) -> tuple[str, ...]:
    """``"core,sam2"`` / ``["core", "sam2"]`` / ``"all"`` -> group names in GROUPS order."""
    if spec is None or spec == "" or spec == []:
        return default
    items = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in s.split(",")]
    names = {s.strip() for s in items if s.strip()}
    if "all" in names:
        return tuple(GROUPS)
    unknown = sorted(names - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown download group(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(GROUPS)} or 'all'")
    return tuple(g for g in GROUPS if g in names)


def matches(path: str, include: tuple[str, ...], exclude: tuple[str, ...] = ()) -> bool:
    """fnmatch on repo-relative paths (``*`` also crosses ``/``)."""
    return any(fnmatch.fnmatch(path, p) for p in include) and \
        not any(fnmatch.fnmatch(path, p) for p in exclude)
