"""``wan-animate preprocess``: the official preprocess_data.py flags, offline on CPU by default."""
from __future__ import annotations

import argparse
import sys
from typing import Any

NAME = "preprocess"
HELP = ("Extract pose, face crops (and mask/background for replace mode) from a driving video "
        "into the folder `wan-animate generate` reads.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video_path", required=True, help="driving video (any container FFmpeg reads)")
    p.add_argument("--refer_path", required=True, help="reference image of the character")
    p.add_argument("--save_path", required=True,
                   help="output folder, new or existing: its other files are kept; the outputs are "
                        "written in a staging folder first, so a failed run leaves an earlier result")
    p.add_argument("--ckpt_path", default=None,
                   help="official process_checkpoint folder (det/yolov10m.onnx, pose2d/vitpose_h_wholebody.onnx, "
                        "sam2/sam2_hiera_large.pt, FLUX.1-Kontext-dev/ for --use_flux, mediapipe/*.task for "
                        "mediapipe >= 0.10.30); without it MediaPipe (<= 0.10.21) runs offline on CPU")
    p.add_argument("--resolution_area", type=int, nargs=2, default=[1280, 720], metavar=("W", "H"),
                   help="target area W*H (aspect kept, sides multiples of 16)")
    p.add_argument("--fps", type=float, default=30, help="output frame rate; -1 keeps the source rate")
    p.add_argument("--replace_flag", action="store_true", help="replace mode (mask + background)")
    p.add_argument("--retarget_flag", action="store_true",
                   help="retarget the driving skeleton to the reference proportions (animate mode)")
    p.add_argument("--use_flux", action="store_true",
                   help="with --retarget_flag: edit the reference and a driving frame into a canonical pose "
                        "with FLUX.1 Kontext before measuring the bone ratios (needs `pip install diffusers "
                        "transformers` and --ckpt_path with FLUX.1-Kontext-dev/: `wan-animate setup download "
                        "--with flux`); also writes refer_edit.png and tpl_edit.png")
    p.add_argument("--iterations", type=int, default=3, help="mask dilation iterations (0 = none)")
    p.add_argument("--k", type=int, default=7, help="mask dilation kernel size")
    p.add_argument("--w_len", type=int, default=1, help="mask block grid columns (1 = bounding box)")
    p.add_argument("--h_len", type=int, default=1, help="mask block grid rows (1 = bounding box)")
    p.add_argument("--backend", choices=("auto", "mediapipe", "vitpose"), default="auto",
                   help="keypoint backend (auto: ViTPose when --ckpt_path has it, else MediaPipe)")
    p.add_argument("--segmenter", choices=("auto", "sam2", "mediapipe"), default="auto",
                   help="replace-mode mask (auto: SAM2 when its checkpoint exists, else MediaPipe)")
    p.add_argument("--smooth", type=int, default=0, metavar="RADIUS",
                   help="temporal keypoint smoothing radius in frames (0 = official, none)")
    p.add_argument("--device", default="cpu", help="device for ONNX / SAM2 / FLUX (cpu, cuda)")
    p.add_argument("--lossless", action="store_true", help="write lossless RGB H.264 instead of yuv420p")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


class _Bar:
    """One tqdm bar per stage (or nothing when quiet / tqdm missing)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.stage = ""
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage != self.stage:
            self.close()
            from tqdm import tqdm
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="frame", file=sys.stderr)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    from wan_animate.outputs import check_folder_destination
    from wan_animate.preprocess.mask import MaskOptions
    from wan_animate.preprocess.pipeline import (PreprocessOptions, output_bytes, preprocess,
                                                 save_preprocessed)
    from wan_animate.preprocess.video_io import read_image, read_video

    opts = PreprocessOptions(
        mode="replace" if args.replace_flag else "animate",
        resolution_area=(args.resolution_area[0], args.resolution_area[1]), fps=args.fps,
        retarget=args.retarget_flag, use_flux=args.use_flux,
        mask=MaskOptions(k=args.k, iterations=args.iterations, w_len=args.w_len, h_len=args.h_len),
        ckpt_path=args.ckpt_path, backend=args.backend, segmenter=args.segmenter,
        smooth_radius=args.smooth, device=args.device)
    save_path = check_folder_destination(args.save_path, "--save_path")   # before any work
    reference = read_image(args.refer_path)
    frames, fps = read_video(args.video_path, fps=args.fps)     # only the kept frames
    area = args.resolution_area[0] * args.resolution_area[1]
    check_folder_destination(save_path, "--save_path",
                             output_bytes(len(frames), area, opts.mode, args.lossless))
    bar = _Bar(args.quiet)
    try:
        result = preprocess(frames, fps, reference, opts, on_progress=bar, resampled=True)
    finally:
        bar.close()
    out = save_preprocessed(result, save_path, lossless=args.lossless)
    print(f"wrote {out} ({len(result.pose)} frames at {result.fps:g} fps, backend {result.backend}"
          f"{', mask ' + result.segmenter if result.segmenter else ''}); "
          f"{result.seconds_per_frame:.3f} s/frame")
    notes = [(result.frames_without_person, "without a person (filled from neighbours)"),
             (result.frames_without_face, "without a face (face box from neighbours)"),
             (result.frames_without_mask, "with an empty mask (mask from neighbours)"),
             (result.detector_misses, "where the detector found no box (whole image used)")]
    for count, what in notes:
        if count:
            print(f"note: {count} frame(s) {what}")
    return 0
