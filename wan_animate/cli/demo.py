"""``wan-animate demo``: the whole path offline on a CPU in about a minute.

Writes a tiny random checkpoint, builds a preprocessed folder (by running the real
preprocessing on ``--video``/``--image`` when given, else from synthetic media), generates with
the tiny model and prints where the video is. Tiny random weights produce noise: the demo
proves the pipeline runs; the real weights are ``wan-animate setup download``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

NAME = "demo"
HELP = "run the whole pipeline offline with a tiny random checkpoint (output is noise)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("wan_animate_demo"), help="output folder")
    p.add_argument("--video", type=Path, default=None, help="driving video (runs preprocessing)")
    p.add_argument("--image", type=Path, default=None, help="reference image (with --video)")
    p.add_argument("--replace", action="store_true", help="replace mode instead of animate")
    p.add_argument("--frames", type=int, default=33, help="frames of the synthetic clip")
    p.add_argument("--steps", type=int, default=4)


def run(args: argparse.Namespace) -> int:
    from wan_animate.checkpoints.official import load_bundle
    from wan_animate.checkpoints.tiny import write_tiny_checkpoint
    from wan_animate.cli.demo_media import write_preprocessed
    from wan_animate.cli.progress import StepBars
    from wan_animate.sampling.folder import read_preprocessed, save_output
    from wan_animate.sampling.generate import generate
    from wan_animate.sampling.options import SampleOptions

    t0 = time.time()
    out = args.out
    ckpt = write_tiny_checkpoint(out / "tiny_checkpoint")
    print(f"[1/3] tiny checkpoint (official layout, random weights): {ckpt}")
    src = out / "preprocessed"
    if args.video is not None:
        if args.image is None:
            print("error: --video needs --image (the reference character)")
            return 1
        from wan_animate.preprocess.pipeline import PreprocessOptions, preprocess, save_preprocessed
        from wan_animate.preprocess.video_io import read_image, read_video

        frames, fps = read_video(args.video, fps=16)          # decodes only the 16 fps frames
        opts = PreprocessOptions(mode="replace" if args.replace else "animate",
                                 resolution_area=(256, 144), fps=16)
        result = preprocess(frames[:args.frames], fps, read_image(args.image), opts, resampled=True)
        save_preprocessed(result, src, lossless=True)
        print(f"[2/3] preprocessed {args.video} + {args.image} with MediaPipe: {src}")
    else:
        write_preprocessed(src, args.frames, 96, 160, fps=16, replace=args.replace)
        print(f"[2/3] synthetic preprocessed folder ({args.frames} frames, 160x96): {src}")
    inputs = read_preprocessed(src, args.replace)
    models = load_bundle(ckpt, "cpu", use_relighting_lora=args.replace)
    bars = StepBars()
    opts = SampleOptions(mode="replace" if args.replace else "animate", frame_num=17,
                         steps=args.steps, seed=0)
    try:
        video = generate(models, inputs, opts, on_step=bars)
    finally:
        bars.close()
    path = save_output(video, out / "demo.mp4", inputs.fps)
    print(f"[3/3] generated {video.shape[1]} frames at {inputs.fps:g} fps in {time.time() - t0:.0f} s")
    print(f"video: {path.resolve()}")
    print("Note: tiny random weights give noise. For real results download the model with "
          "`wan-animate setup download` (Wan-AI/Wan2.2-Animate-14B) and run "
          "`wan-animate generate --ckpt_dir <folder> --src_root_path <preprocessed>`.")
    return 0
