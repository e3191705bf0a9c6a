"""``--use_flux``: FLUX.1 Kontext edits the reference and a driving frame into a canonical
pose; the retarget bone ratios are then measured on the edited skeletons.

Only the bone ratios change: the scale, the body type and the ground / neck anchors still
come from the unedited first driving frame and reference (as officially). Needs the optional
``diffusers`` (>= 0.34, with ``transformers``) and the diffusers folder
``process_checkpoint/FLUX.1-Kontext-dev`` (``wan-animate setup download --with flux``);
both are checked by :func:`flux_folder` before any heavy work.
"""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from wan_animate.checkpoints.layout import FLUX_DIR, PROCESS_DIR
from wan_animate.errors import Cancelled, CheckpointError, InputError
from wan_animate.preprocess.detection import KeypointBackend, fill_missing
from wan_animate.preprocess.frames import padding_resize
from wan_animate.preprocess.keypoints import PixelPose, PoseMeta, metas_from_wholebody
from wan_animate.preprocess.render import LIMBS
from wan_animate.preprocess.retarget import (AVERAGED_RATIO_PAIRS, L_ANKLE, L_HIP, NOSE, R_ANKLE,
                                             R_HIP, SCALE_THRESHOLD, SHARED_RATIO_PAIRS,
                                             RetargetTrace, _limb_length, retarget_sequence)

FLUX_SUBDIR = Path(FLUX_DIR).relative_to(PROCESS_DIR).as_posix()    # inside --ckpt_path
DOWNLOAD_HINT = "wan-animate setup download --with flux"
TEMPLATE_FRAME = 1     # the official code edits frames[1] (the second driving frame)

PROMPT_T_POSE = "Change the person to a standard T-pose (facing forward with arms extended)."
PROMPT_ARMS_DOWN = ("Change the person to a standard pose with the face oriented forward and arms "
                    "extending straight down by the sides.")
SUFFIX_LEGS = " The person is standing. Feet and Hands are visible in the image."
SUFFIX_ARMS = " Hands are visible in the image."
PROMPT_FACE = "Change the person to face forward."
VISIBLE_SCORE = 0.75
ARM_POINTS = (3, 4, 6, 7)          # RElbow, RWrist, LElbow, LWrist
LEG_POINTS = (9, 12, 10, 13)       # RKnee, LKnee, RAnkle, LAnkle
HEAD_POINTS = (0, 14, 15, 16, 17)  # Nose, REye, LEye, REar, LEar
SHOULDERS = (6, 3)                 # LShoulder - RShoulder limb (1-based, as LIMBS)


@dataclass(frozen=True)
class FluxEditConfig:
    """The official FluxKontextPipeline call: bf16, guidance 2.5, 28 steps. ``max_area`` is
    the diffusers default the official call leaves in place (the output keeps the image's
    aspect at about this many pixels and is letterboxed back to the image size); ``seed``
    None = unseeded, as officially."""

    guidance_scale: float = 2.5
    num_inference_steps: int = 28
    dtype: str = "bfloat16"
    max_area: int = 1024 ** 2
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1 or self.max_area < 64:
            raise InputError(f"bad FLUX settings: {self.num_inference_steps} steps, max_area {self.max_area}")


def flux_folder(ckpt_path: str | Path | None) -> Path:
    """The FLUX Kontext diffusers folder, after checking that diffusers can run it.

    Cheap (no weights are read): call it before any heavy work. Raises CheckpointError
    naming the package to install or the folder to download.
    """
    missing = [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise CheckpointError(f"--use_flux needs `pip install diffusers transformers` (missing: "
                              f"{', '.join(missing)}); or retarget without --use_flux")
    try:
        from diffusers import FluxKontextPipeline  # noqa: F401
    except ImportError as e:
        raise CheckpointError(f"--use_flux needs diffusers >= 0.34 with FluxKontextPipeline "
                              f"(`pip install -U diffusers transformers`): {e}") from e
    if ckpt_path is None:
        raise CheckpointError(f"--use_flux needs --ckpt_path (process_checkpoint folder) with "
                              f"{FLUX_SUBDIR}/ ({DOWNLOAD_HINT})")
    folder = Path(ckpt_path) / FLUX_SUBDIR
    index = folder / "model_index.json"
    if not index.is_file():
        raise CheckpointError(f"--use_flux: no FLUX.1 Kontext diffusers folder at {folder} (missing "
                              f"model_index.json): run `{DOWNLOAD_HINT}` (gated: accept the licence "
                              "on Hugging Face first) or retarget without --use_flux")
    try:
        parts = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"unreadable {index}: {e}") from e
    absent = sorted(k for k, v in parts.items() if isinstance(v, list) and v and v[0] is not None
                    and not (folder / k).is_dir())
    if absent:
        raise CheckpointError(f"incomplete FLUX folder {folder}: missing {', '.join(absent)}/ "
                              f"(re-run `{DOWNLOAD_HINT}`)")
    return folder


def load_flux_pipeline(folder: Path, device: str = "cpu", config: FluxEditConfig = FluxEditConfig()) -> Any:
    """``FluxKontextPipeline.from_pretrained(folder)`` in ``config.dtype`` on ``device``."""
    import diffusers
    import torch
    from diffusers import FluxKontextPipeline
    from packaging.version import Version
    dtype = getattr(torch, config.dtype)
    # diffusers 0.40 renamed ``torch_dtype`` to ``dtype`` (the old name warns)
    kw = {"dtype": dtype} if Version(diffusers.__version__) >= Version("0.40") else {"torch_dtype": dtype}
    try:
        pipe = FluxKontextPipeline.from_pretrained(str(folder), **kw)
    except Exception as e:   # diffusers / transformers raise OSError, ValueError, EnvironmentError...
        raise CheckpointError(f"cannot load FLUX Kontext from {folder}: {e}") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def edit_image(pipe: Any, image: np.ndarray, prompt: str, config: FluxEditConfig = FluxEditConfig(),
               on_step: Callable[[int, int], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> np.ndarray:
    """One FLUX Kontext edit: uint8 [H, W, 3] RGB in, the edit letterboxed to [H, W, 3] out."""
    import torch
    from PIL import Image
    h, w = image.shape[:2]

    def step_end(_pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if cancelled is not None and cancelled():
            raise Cancelled("preprocessing cancelled")
        if on_step is not None:
            on_step(i + 1, config.num_inference_steps)
        return kwargs

    gen = None if config.seed is None else torch.Generator("cpu").manual_seed(config.seed)
    out = pipe(image=Image.fromarray(np.ascontiguousarray(image)), prompt=prompt, height=h, width=w,
               guidance_scale=config.guidance_scale, num_inference_steps=config.num_inference_steps,
               max_area=config.max_area, generator=gen, callback_on_step_end=step_end).images[0]
    return padding_resize(np.asarray(out.convert("RGB")), h, w)


def _visible(body: np.ndarray, points: tuple[int, ...]) -> bool:
    # NOTE: official quirk kept: a point counts only when x, y and score are all non-zero.
    return any(bool(np.all(body[i] != 0)) and body[i][0] <= 1 and body[i][1] <= 1
               and body[i][2] >= VISIBLE_SCORE for i in points)


def _pose_prompt(width: int, height: int, suffix: str) -> str:
    return (PROMPT_T_POSE if width > height else PROMPT_ARMS_DOWN) + suffix


def editing_prompts(frames: Sequence[PoseMeta], ref: PoseMeta) -> tuple[str, str]:
    """(driving-frame prompt, reference prompt) by what the driving video shows.

    Legs (a knee or ankle inside the frame at score >= 0.75 in any frame): a standing pose
    with feet and hands; else arms (an elbow or wrist): the pose with hands; else "face
    forward". Landscape images get the T-pose, portrait / square ones arms down.
    """
    # Ported from Wan2.2 .../preprocess/process_pipepline.py::ProcessPipeline.get_editing_prompts
    arms = legs = False
    for meta in frames:
        arms = arms or _visible(meta.body, ARM_POINTS)
        legs = legs or _visible(meta.body, LEG_POINTS)
        if arms and legs:
            break
    suffix = SUFFIX_LEGS if legs else SUFFIX_ARMS if arms else None
    if suffix is None:
        return PROMPT_FACE, PROMPT_FACE
    tpl = frames[-1] if frames else ref
    return _pose_prompt(tpl.width, tpl.height, suffix), _pose_prompt(ref.width, ref.height, suffix)


def _height_scale(src: PoseMeta, dst: PoseMeta) -> float | None:
    """Body-height ratio src / dst (nose to ankles, else to hips), None when the keypoints
    are not confident enough (the sqrt-area fallback applies)."""
    for lower in ((R_ANKLE, L_ANKLE), (R_HIP, L_HIP)):
        idx = (NOSE,) + lower
        if all(src.body[i][2] > SCALE_THRESHOLD and dst.body[i][2] > SCALE_THRESHOLD for i in idx):
            hs = src.height * abs((src.body[lower[0]][1] + src.body[lower[1]][1]) / 2 - src.body[NOSE][1])
            hd = dst.height * abs((dst.body[lower[0]][1] + dst.body[lower[1]][1]) / 2 - dst.body[NOSE][1])
            return 1.0 * hs / hd
    return None


def scale_compensation(meta: PoseMeta, edit: PoseMeta) -> float:
    """How much FLUX shrank the person: max(head width ratio (normalised x extent of nose,
    eyes, ears), shoulder length ratio) of the original over the edit. 1.0 when either
    is degenerate (the official code divides by zero there)."""
    # Ported from Wan2.2 .../preprocess/retarget_pose.py::calculate_scale_ratio
    xs, xe = meta.body[list(HEAD_POINTS), 0], edit.body[list(HEAD_POINTS), 0]
    shoulder = _limb_length(meta.body, SHOULDERS, meta.height, meta.width)
    shoulder_edit = _limb_length(edit.body, SHOULDERS, edit.height, edit.width)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = max(np.float64(xs.max() - xs.min()) / np.float64(xe.max() - xe.min()),
                    np.float64(shoulder) / np.float64(shoulder_edit))
    return float(ratio) if math.isfinite(ratio) and ratio > 0 else 1.0


def edited_bone_ratios(first: PoseMeta, ref: PoseMeta, first_edit: PoseMeta,
                       ref_edit: PoseMeta) -> list[float]:
    """The 19 bone ratios (reference / driving) measured on the FLUX-edited skeletons.

    The edited reference is rescaled by the edited height ratio; when that ratio falls
    back to sqrt(area), FLUX's own zoom is compensated by :func:`scale_compensation`.
    Left/right pairs then share the larger ratio, eye and ear ratios are averaged.
    """
    # Ported from Wan2.2 .../preprocess/retarget_pose.py::retarget_pose (use_edit_for_base)
    scale = _height_scale(first_edit, ref_edit)
    comp_src = comp_dst = 1.0
    if scale is None:
        scale = math.sqrt(first_edit.height * first_edit.width) / math.sqrt(ref_edit.height * ref_edit.width)
        comp_src, comp_dst = scale_compensation(first, first_edit), scale_compensation(ref, ref_edit)
    dst_h, dst_w = int(ref_edit.height * scale), int(ref_edit.width * scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = [1.0 * _limb_length(ref_edit.body, limb, dst_h, dst_w) * comp_dst
                  / _limb_length(first_edit.body, limb, first_edit.height, first_edit.width) / comp_src
                  for limb in LIMBS]
    for a, b in SHARED_RATIO_PAIRS:
        ratios[a] = ratios[b] = max(ratios[a], ratios[b])
    for a, b in AVERAGED_RATIO_PAIRS:
        ratios[a] = ratios[b] = (ratios[a] + ratios[b]) / 2
    return [float(r) for r in ratios]


def retarget_with_ratios(first: PoseMeta, ref: PoseMeta, frames: list[PoseMeta], ratios: list[float],
                         trace: RetargetTrace | None = None) -> list[PixelPose]:
    """:func:`~wan_animate.preprocess.retarget.retarget_sequence` with given bone ratios
    (scale, body type and anchors from the unedited ``first`` and ``ref``)."""
    return retarget_sequence(first, ref, frames, trace, bone_ratios=ratios)


@dataclass
class FluxRetarget:
    """Retargeted poses (reference canvas) and the two edited images, uint8 RGB:
    reference_edit [h, w, 3] (resized reference size), template_edit [H, W, 3] (frame size)."""

    poses: list[PixelPose]
    reference_edit: np.ndarray
    template_edit: np.ndarray
    prompts: tuple[str, str]
    ratios: list[float]


def _edited_meta(backend: KeypointBackend, image: np.ndarray, what: str) -> PoseMeta:
    det = backend.detect(image[None], video=False, segment=False)
    try:
        det, _, _ = fill_missing(det)
    except InputError as e:
        raise InputError(f"--use_flux: no person found in the FLUX-edited {what} ({e}); "
                         "retarget without --use_flux") from e
    h, w = image.shape[:2]
    return metas_from_wholebody(det.keypoints, w, h, fallback_first=True)[0]


def flux_retarget(folder: Path, backend: KeypointBackend, frames: np.ndarray, ref_img: np.ndarray,
                  metas: list[PoseMeta], ref_meta: PoseMeta, device: str = "cpu",
                  config: FluxEditConfig = FluxEditConfig(),
                  on_progress: Callable[[str, int, int], None] | None = None,
                  cancelled: Callable[[], bool] | None = None) -> FluxRetarget:
    """The official ``--retarget_flag --use_flux`` path.

    Args:
        frames: uint8 [T, H, W, 3] RGB driving frames (``metas`` are theirs).
        ref_img: uint8 [h, w, 3] RGB reference at the resized size (``ref_meta`` is its).
    """
    tpl_prompt, ref_prompt = editing_prompts(metas, ref_meta)
    pipe = load_flux_pipeline(folder, device, config)

    def step(stage: str) -> Callable[[int, int], None] | None:
        return None if on_progress is None else (lambda d, n: on_progress(stage, d, n))

    try:
        ref_edit = edit_image(pipe, ref_img, ref_prompt, config, step("flux reference"), cancelled)
        tpl_img = frames[min(TEMPLATE_FRAME, len(frames) - 1)]
        tpl_edit = edit_image(pipe, tpl_img, tpl_prompt, config, step("flux frame"), cancelled)
    finally:
        del pipe                       # ~33 GB in bf16: free it before the keypoint models run
        if device.startswith("cuda"):
            import gc

            import torch
            gc.collect()
            torch.cuda.empty_cache()
    ratios = edited_bone_ratios(metas[0], ref_meta, _edited_meta(backend, tpl_edit, "driving frame"),
                                _edited_meta(backend, ref_edit, "reference"))
    poses = retarget_with_ratios(metas[0], ref_meta, metas, ratios)
    return FluxRetarget(poses, ref_edit, tpl_edit, (tpl_prompt, ref_prompt), ratios)
