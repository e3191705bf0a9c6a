"""The preprocessing engine entry: frames + reference in, the conditioning videos out.

``preprocess`` is used by the CLI and by the ComfyUI nodes (IMAGE batches) alike;
``save_preprocessed`` writes the folder ``wan-animate generate`` reads.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from wan_animate.errors import Cancelled, CheckpointError, InputError
from wan_animate.preprocess.detection import Detections, KeypointBackend, fill_missing, smooth_keypoints
from wan_animate.preprocess.face_crop import FACE_SCALE, FACE_SIZE, crop_face, face_box
from wan_animate.preprocess.frames import padding_resize, resample_plan, resize_by_area
from wan_animate.preprocess.keypoints import PoseMeta, metas_from_wholebody
from wan_animate.preprocess.mask import MaskOptions, background, mask_frame, postprocess_mask
from wan_animate.preprocess.render import draw_pose
from wan_animate.preprocess.retarget import retarget_sequence

ProgressFn = Callable[[str, int, int], None]     # (stage, done, total)


@dataclass(frozen=True)
class PreprocessOptions:
    """Official ``preprocess_data.py`` flags plus backend choices.

    mode: "animate" or "replace". resolution_area: (W, H) whose product is the target area.
    fps: output frame rate (-1 keeps the source rate). backend: "auto" (ViTPose when
    ``ckpt_path`` has the official ONNX files, else MediaPipe), "mediapipe" or "vitpose".
    segmenter: "auto" (SAM2 when ``ckpt_path/sam2/sam2_hiera_large.pt`` exists, else the
    backend's segmentation), "sam2" or "mediapipe". smooth_radius: temporal keypoint
    smoothing in frames (0 = official, none).
    """

    mode: str = "animate"
    resolution_area: tuple[int, int] = (1280, 720)
    fps: float = 30
    retarget: bool = False
    use_flux: bool = False
    mask: MaskOptions = field(default_factory=MaskOptions)
    ckpt_path: str | None = None
    backend: str = "auto"
    segmenter: str = "auto"
    smooth_radius: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in ("animate", "replace"):
            raise InputError(f"mode must be 'animate' or 'replace', got {self.mode!r}")
        if self.use_flux and not self.retarget:
            raise InputError("--use_flux needs --retarget_flag (FLUX only edits the retarget poses)")
        if self.retarget and self.mode == "replace":
            raise InputError("retargeting is only supported in animate mode")
        if self.backend not in ("auto", "mediapipe", "vitpose"):
            raise InputError(f"unknown keypoint backend {self.backend!r}")
        if self.segmenter not in ("auto", "sam2", "mediapipe"):
            raise InputError(f"unknown segmenter {self.segmenter!r}")
        if self.resolution_area[0] * self.resolution_area[1] < 256:
            raise InputError(f"resolution_area {self.resolution_area} is too small")


@dataclass
class PreprocessResult:
    """pose [T, H, W, 3], face [T, 512, 512, 3], reference [h, w, 3] (as given), bg / mask
    [T, H, W, 3] (replace mode; mask = 0/255 on 3 channels), all uint8 RGB; fps; counts of
    frames whose detections were filled from neighbours; seconds per frame. ``--use_flux``
    adds the FLUX-edited reference [h', w', 3] (resized size) and driving frame [H, W, 3]."""

    pose: np.ndarray
    face: np.ndarray
    reference: np.ndarray
    fps: float
    background: np.ndarray | None = None
    mask: np.ndarray | None = None
    frames_without_person: int = 0
    frames_without_face: int = 0
    frames_without_mask: int = 0
    detector_misses: int = 0
    backend: str = ""
    segmenter: str = ""
    seconds_per_frame: float = 0.0
    metas: list[PoseMeta] = field(default_factory=list)
    reference_edit: np.ndarray | None = None
    template_edit: np.ndarray | None = None


def _check_image(name: str, arr: np.ndarray, ndim: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != ndim or arr.shape[-1] != 3:
        shape = "[T, H, W, 3]" if ndim == 4 else "[H, W, 3]"
        raise InputError(f"{name} must be uint8 {shape} RGB, got {arr.dtype} {list(arr.shape)}")
    if arr.shape[0] == 0 or min(arr.shape[-3:-1]) < 8:
        raise InputError(f"{name} is empty or too small: {list(arr.shape)}")
    return arr


def make_backend(opts: PreprocessOptions) -> KeypointBackend:
    """The keypoint backend the options ask for (errors name the missing file)."""
    from wan_animate.preprocess.vitpose import DETECTOR_FILE, POSE_FILE, VitPoseBackend
    ckpt = Path(opts.ckpt_path) if opts.ckpt_path else None
    has_official = ckpt is not None and all((ckpt / f).is_file() for f in (DETECTOR_FILE, POSE_FILE))
    if opts.backend == "vitpose" or (opts.backend == "auto" and has_official):
        if ckpt is None:
            raise CheckpointError("the vitpose backend needs --ckpt_path (process_checkpoint folder)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if opts.device.startswith("cuda") else None
        return VitPoseBackend(ckpt, providers)
    from wan_animate.preprocess.mediapipe_pose import make_mediapipe_backend
    return make_mediapipe_backend(opts.ckpt_path)


def _detect(backend: KeypointBackend, frames: np.ndarray, video: bool, segment: bool,
            stage: str, progress: ProgressFn | None, cancelled: Callable[[], bool] | None
            ) -> tuple[Detections, int, int]:
    cb = None if progress is None else (lambda d, n: progress(stage, d, n))
    det = backend.detect(frames, video=video, segment=segment, on_progress=cb, cancelled=cancelled)
    try:
        return fill_missing(det)
    except InputError as e:
        raise InputError(f"{stage}: {e}") from e


def _reference_skeleton(backend: KeypointBackend, ref_img: np.ndarray, progress: ProgressFn | None,
                        cancelled: Callable[[], bool] | None) -> Detections:
    """Keypoints of the reference image [h, w, 3] (for --retarget_flag)."""
    det = backend.detect(ref_img[None], video=False, segment=False, cancelled=cancelled,
                         on_progress=None if progress is None else (lambda d, n: progress("reference", d, n)))
    try:
        return fill_missing(det)[0]
    except InputError:
        raise InputError(f"reference image: the {backend.name} backend found no person in it, and "
                         "--retarget_flag needs the reference's skeleton to measure its proportions; "
                         "drop --retarget_flag (a stylized or non-human character animates without "
                         "it) or use a reference where the whole body is visible") from None


def _metas(det: Detections, h: int, w: int, smooth: int) -> list[PoseMeta]:
    kps = smooth_keypoints(det.keypoints, smooth) if smooth else det.keypoints
    return metas_from_wholebody(kps, w, h, fallback_first=True)


def _face_crops(frames: np.ndarray, metas: list[PoseMeta]) -> np.ndarray:
    out = np.zeros((len(frames), FACE_SIZE, FACE_SIZE, 3), np.uint8)
    h, w = frames.shape[1:3]
    last: tuple[int, int, int, int] | None = None
    for t, (frame, meta) in enumerate(zip(frames, metas)):
        try:
            box = face_box(meta.face[:, :2], (h, w), FACE_SCALE)
            out[t] = crop_face(frame, box)
            last = box
        except InputError:    # degenerate or off-image face: keep the previous box
            if last is None:
                last = (0, w, 0, h)
            out[t] = crop_face(frame, last)
    return out


def _resample(frames: np.ndarray, fps: float, target_fps: float) -> tuple[np.ndarray, float]:
    eff, target, idx = resample_plan(len(frames), fps, target_fps)
    if target < 1:
        raise InputError(f"the video is too short for --fps {target_fps}: {len(frames)} frames at {fps:g} fps")
    return frames[idx], float(eff)


def preprocess(frames: np.ndarray, fps: float, reference: np.ndarray, options: PreprocessOptions,
               on_progress: ProgressFn | None = None,
               cancelled: Callable[[], bool] | None = None,
               resampled: bool = False) -> PreprocessResult:
    """Run the official preprocessing on in-memory frames.

    Args:
        frames: uint8 [T, H, W, 3] RGB driving video at ``fps``.
        reference: uint8 [h, w, 3] RGB reference image.
        resampled: ``frames`` already went through the ``options.fps`` subsampling (as
            ``read_video(path, fps=...)`` returns them, at the effective ``fps``): not again.
    Returns:
        :class:`PreprocessResult` (animate: pose at the resized reference size, faces from the
        source frames; replace: everything at the resized frame size).
    """
    frames = _check_image("driving video", frames, 4)
    reference = _check_image("reference image", reference, 3)
    flux_dir = None
    if options.retarget and options.use_flux:    # diffusers + FLUX folder, before any heavy work
        from wan_animate.preprocess.flux_edit import flux_folder
        flux_dir = flux_folder(options.ckpt_path)
    t0 = time.perf_counter()
    frames, eff_fps = (frames, float(fps)) if resampled else _resample(frames, fps, options.fps)
    area = options.resolution_area[0] * options.resolution_area[1]
    backend = make_backend(options)
    if cancelled is not None and cancelled():
        raise Cancelled("preprocessing cancelled")
    if options.mode == "replace":
        return _replace(frames, eff_fps, reference, area, backend, options, on_progress, cancelled, t0)
    ref_img = resize_by_area(reference, area, divisor=16)
    # The reference's skeleton is only used to retarget: a stylized character in which no
    # person is found (anime, cartoon, animal) animates fine without --retarget_flag.
    ref_det = _reference_skeleton(backend, ref_img, on_progress, cancelled) if options.retarget else None
    det, no_person, no_face = _detect(backend, frames, True, False, "pose", on_progress, cancelled)
    h, w = frames.shape[1:3]
    metas = _metas(det, h, w, options.smooth_radius)
    faces = _face_crops(frames, metas)
    rh, rw = ref_img.shape[:2]
    edits = None
    if ref_det is not None:
        ref_meta = metas_from_wholebody(ref_det.keypoints, rw, rh, fallback_first=True)[0]
        if flux_dir is not None:
            from wan_animate.preprocess.flux_edit import flux_retarget
            edits = flux_retarget(flux_dir, backend, frames, ref_img, metas, ref_meta, options.device,
                                  on_progress=on_progress, cancelled=cancelled)
            retargeted = edits.poses
        else:
            retargeted = retarget_sequence(metas[0], ref_meta, metas)
        poses = np.stack([draw_pose(p) for p in retargeted])
    else:
        poses = np.stack([padding_resize(draw_pose(m.to_pixels()), rh, rw) for m in metas])
    return PreprocessResult(
        pose=poses, face=faces, reference=reference, fps=eff_fps,
        frames_without_person=no_person, frames_without_face=no_face,
        detector_misses=det.misses, backend=backend.name,
        seconds_per_frame=(time.perf_counter() - t0) / len(frames), metas=metas,
        reference_edit=None if edits is None else edits.reference_edit,
        template_edit=None if edits is None else edits.template_edit)


def _replace(frames: np.ndarray, fps: float, reference: np.ndarray, area: int,
             backend: KeypointBackend, options: PreprocessOptions, progress: ProgressFn | None,
             cancelled: Callable[[], bool] | None, t0: float) -> PreprocessResult:
    from wan_animate.preprocess.segment import (SAM2_FILE, build_sam2_predictor, fill_empty_masks,
                                                masks_from_segmentation, sam2_masks)
    frames = np.stack([resize_by_area(f, area, divisor=16) for f in frames])
    h, w = frames.shape[1:3]
    sam_ckpt = Path(options.ckpt_path) / SAM2_FILE if options.ckpt_path else None
    use_sam = options.segmenter == "sam2" or (
        options.segmenter == "auto" and sam_ckpt is not None and sam_ckpt.is_file())
    if options.segmenter == "sam2" and sam_ckpt is None:
        raise CheckpointError("the sam2 segmenter needs --ckpt_path with sam2/sam2_hiera_large.pt")
    det, no_person, no_face = _detect(backend, frames, True, not use_sam, "pose", progress, cancelled)
    metas = _metas(det, h, w, options.smooth_radius)
    faces = _face_crops(frames, metas)
    poses = np.stack([draw_pose(m.to_pixels()) for m in metas])
    if use_sam:
        predictor = build_sam2_predictor(sam_ckpt, device=options.device)  # type: ignore[arg-type]
        cb = None if progress is None else (lambda d, n: progress("mask", d, n))
        raw = sam2_masks(predictor, frames, metas, cb, cancelled)
        segmenter = "sam2"
    else:
        if det.segmentation is None:
            raise CheckpointError(f"the {backend.name} backend gives no segmentation; replace mode "
                                  "needs the SAM2 checkpoint (process_checkpoint/sam2/sam2_hiera_large.pt)")
        raw = masks_from_segmentation(det.segmentation)
        segmenter = backend.name
    raw, no_mask = fill_empty_masks(raw)
    aug = np.stack([postprocess_mask(m, options.mask) for m in raw])
    return PreprocessResult(
        pose=poses, face=faces, reference=reference, fps=fps,
        background=np.stack([background(f, m) for f, m in zip(frames, aug)]),
        mask=np.stack([mask_frame(m) for m in aug]),
        frames_without_person=no_person, frames_without_face=no_face, frames_without_mask=no_mask,
        detector_misses=det.misses, backend=backend.name, segmenter=segmenter,
        seconds_per_frame=(time.perf_counter() - t0) / len(frames), metas=metas)


def save_preprocessed(result: PreprocessResult, folder: str | Path, lossless: bool = False) -> Path:
    """Write ``src_pose.mp4``, ``src_face.mp4``, ``src_ref.png`` (+ ``src_bg.mp4``,
    ``src_mask.mp4``; + ``refer_edit.png``, ``tpl_edit.png`` with FLUX) into ``folder``.

    Other files in ``folder`` are kept byte for byte; the set is written in a staging folder
    first, so a failed run leaves an earlier result intact (:func:`wan_animate.outputs.write_file_set`).
    """
    from wan_animate.outputs import write_file_set
    from wan_animate.preprocess.video_io import write_image, write_video

    def video(frames: np.ndarray) -> Callable[[Path], object]:
        return lambda path: write_video(path, frames, result.fps, lossless=lossless)

    def image(img: np.ndarray) -> Callable[[Path], object]:
        return lambda path: write_image(path, img)

    writers: dict[str, Callable[[Path], object]] = {
        "src_pose.mp4": video(result.pose), "src_face.mp4": video(result.face),
        "src_ref.png": image(result.reference)}
    if result.background is not None and result.mask is not None:
        writers.update({"src_bg.mp4": video(result.background), "src_mask.mp4": video(result.mask)})
    if result.reference_edit is not None and result.template_edit is not None:
        writers.update({"refer_edit.png": image(result.reference_edit),
                        "tpl_edit.png": image(result.template_edit)})
    return write_file_set(folder, writers, flag="--save_path")


def output_bytes(frames: int, area: int, mode: str, lossless: bool) -> int:
    """About how many bytes :func:`save_preprocessed` writes for ``frames`` frames of about
    ``area`` pixels (``--resolution_area`` W * H; a generous bound: H.264 stays well under a tenth of raw RGB,
    lossless RGB under half)."""
    videos = 2 if mode == "animate" else 4                  # pose + face (+ bg + mask)
    raw = frames * (area * 3 * (videos - 1) + FACE_SIZE * FACE_SIZE * 3)
    return raw // (2 if lossless else 10) + (4 << 20)


def read_reference(path: str | Path) -> np.ndarray:
    """The reference image as uint8 [H, W, 3] RGB (clear error for unreadable files)."""
    from wan_animate.preprocess.video_io import read_image
    return read_image(path)


__all__ = ["PreprocessOptions", "PreprocessResult", "preprocess", "save_preprocessed", "output_bytes",
           "make_backend", "read_reference"]
