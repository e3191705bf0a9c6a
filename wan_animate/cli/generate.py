"""``wan-animate generate``: the official generate.py flags over our engine.

Reads the preprocessed folder (``--src_root_path``), generates animate or replace (``--replace_flag``)
and writes a browser-playable H.264 mp4 at the source fps (``--fps`` overrides it).
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

NAME = "generate"
HELP = "generate an animate/replace video from a preprocessed folder"


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from wan_animate.sampling.options import DEFAULT_PROMPT

    p.add_argument("--ckpt_dir", type=Path, required=True, help="official checkpoint folder")
    p.add_argument("--src_root_path", type=Path, required=True,
                   help="preprocessed folder (src_pose.mp4, src_face.mp4, src_ref.png [, src_bg.mp4, src_mask.mp4])")
    p.add_argument("--replace_flag", action="store_true", help="replace mode (needs src_bg/src_mask)")
    p.add_argument("--use_relighting_lora", action="store_true", help="apply relighting_lora.ckpt (replace mode)")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:STRENGTH]",
                   help="extra DiT LoRA (ComfyUI/kohya/diffusers/PEFT formats), merged before "
                        "sharding; repeat for several")
    p.add_argument("--refert_num", type=int, default=1, choices=(1, 5),
                   help="temporal guidance frames between clips (official README: 1)")
    p.add_argument("--frame_num", type=int, default=77, help="frames per clip, 4n+1")
    p.add_argument("--sample_solver", default="unipc", choices=("unipc", "dpm++"))
    p.add_argument("--sample_steps", type=int, default=20)
    p.add_argument("--sample_shift", type=float, default=5.0)
    p.add_argument("--sample_guide_scale", type=float, default=1.0,
                   help="> 1 enables CFG (negative prompt + black faces; mainly expression control)")
    p.add_argument("--base_seed", type=int, default=-1, help="-1 = random")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--negative_prompt", default=None)
    p.add_argument("--save_file", type=Path, default=None, help="output .mp4 (default: a dated name)")
    p.add_argument("--fps", type=_positive, default=None,
                   help="output fps (default: the pose video's fps; official code always wrote 30)")
    p.add_argument("--color_match", action="store_true",
                   help="match each later clip's colours to the first (reduces drift; not official)")
    p.add_argument("--device", default=None, help="cuda / cuda:N / cpu (default: cuda if available)")
    p.add_argument("--mode", default="exact", choices=("exact", "fast"),
                   help="exact: bf16, the official numerics; fast: fp8 linears + fp8 attention "
                        "(FA3) in the DiT, ~1.4x faster per step on H100/H200, one GPU")
    p.add_argument("--attention", default="auto",
                   choices=("auto", "sdpa", "fa3", "cudnn", "flash", "efficient", "math"),
                   help="self-attention kernel (auto: FlashAttention-3 on Hopper when installed, "
                        "else cuDNN SDPA)")
    p.add_argument("--gpus", type=int, default=1,
                   help="GPUs of the worker pool (must divide 40 heads); --ulysses_size is an alias. "
                        "Under torchrun (e.g. --nnodes 2 --nproc_per_node 8) the launch's ranks are "
                        "the pool and this flag is ignored")
    p.add_argument("--ulysses_size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--dit_fsdp", action="store_true", help="accepted for compatibility (FSDP2 is on with >1 GPU)")
    p.add_argument("--t5_fsdp", action="store_true", help="accepted for compatibility")
    p.add_argument("--offload_model", default=None, help="accepted for compatibility")
    p.add_argument("--t5_cpu", action="store_true",
                   help="keep umT5-XXL (11 GB) on the CPU; the prompt is encoded there once")
    p.add_argument("--encoders", default="auto", choices=("auto", "parked", "gpu"),
                   help="umT5 + CLIP between encodes (auto: parked in host RAM on a GPU and copied in "
                        "once per new prompt, ~0.3 s; gpu: always resident)")
    p.add_argument("--vae", default="auto", choices=("auto", "whole", "split", "bands"),
                   help="VAE placement, same output in every mode (auto: split by rows over "
                        "several GPUs; on one GPU whole, or in 8 bands when the memory plan finds "
                        "it short: 720p decode 4.2 GiB instead of 18.9; bands: one GPU only)")
    p.add_argument("--swap_blocks", type=int, default=0,
                   help="DiT blocks kept in host memory and streamed to the GPU each step (on "
                        "several GPUs each GPU's shard of them); 0 = as --memory auto plans")
    p.add_argument("--memory", default="auto", choices=("auto", "off"),
                   help="auto: with --swap_blocks 0, swap as many blocks as the GPUs' free memory "
                        "needs for a 1280x720, 77-frame clip (the plan is printed); off: none")


def parse_lora(spec: str) -> tuple[str, float]:
    """``PATH[:STRENGTH]`` -> (path, strength); strength 1.0 when omitted."""
    from wan_animate.errors import InputError

    path, sep, strength = spec.rpartition(":")
    if not sep or "/" in strength or "\\" in strength:
        return spec, 1.0
    try:
        return path, float(strength)
    except ValueError:
        raise InputError(f"--lora {spec!r}: the strength after ':' must be a number, "
                         f"e.g. --lora {path}:0.8") from None


def _default_name(args: argparse.Namespace, gpus: int) -> Path:
    return Path(f"animate-14B_{'replace' if args.replace_flag else 'animate'}_{gpus}_"
                f"{args.prompt[:50].replace(' ', '_').replace('/', '_')}_{datetime.now():%Y%m%d_%H%M%S}.mp4")


def video_bytes(frames: int, height: int, width: int) -> int:
    """A generous bound on the H.264 output size (crf 17 stays far under a tenth of raw yuv420p)."""
    return frames * height * width * 3 // 2 // 10 + (1 << 20)


def run(args: argparse.Namespace) -> int:
    import os
    import random

    import torch

    from wan_animate.cli.progress import StepBars
    from wan_animate.engine import ModelSpec, launched_by_torchrun, load_model
    from wan_animate.outputs import check_file_destination
    from wan_animate.sampling.folder import read_preprocessed, save_output_keeping
    from wan_animate.sampling.options import DEFAULT_NEGATIVE_PROMPT, SampleOptions

    # under torchrun every rank must use the same seed: a random one comes from the launch
    seed = args.base_seed if args.base_seed >= 0 else (
        int(os.environ.get("TORCHELASTIC_RUN_ID", "0"), 36) % 2**31 if "TORCHELASTIC_RUN_ID" in os.environ
        else random.randint(0, 2**63 - 1))
    opts = SampleOptions(mode="replace" if args.replace_flag else "animate", prompt=args.prompt,
                         negative_prompt=args.negative_prompt or DEFAULT_NEGATIVE_PROMPT,
                         frame_num=args.frame_num, refert_num=args.refert_num,
                         steps=args.sample_steps, shift=args.sample_shift,
                         guide_scale=args.sample_guide_scale, solver=args.sample_solver, seed=seed,
                         color_match=args.color_match)
    opts.validate()
    torchrun = launched_by_torchrun()
    gpus = int(os.environ["WORLD_SIZE"]) if torchrun else (args.ulysses_size or args.gpus)
    writes = int(os.environ.get("RANK", "0")) == 0      # rank 0 of a torchrun launch writes
    out = args.save_file or _default_name(args, gpus)
    if writes:   # before anything is read or loaded: a bad destination costs no work
        check_file_destination(out, "--save_file")
    inputs = read_preprocessed(args.src_root_path, args.replace_flag)
    if writes:
        check_file_destination(out, "--save_file", video_bytes(inputs.num_frames, *inputs.size))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"{inputs.num_frames} frames {inputs.size[1]}x{inputs.size[0]} at {inputs.fps:g} fps, "
          f"mode {opts.mode}, seed {seed}, device {device}, gpus {gpus}")
    t0 = time.time()
    bars = StepBars()
    loras = tuple(parse_lora(spec) for spec in args.lora)
    model = load_model(ModelSpec(str(args.ckpt_dir), gpus=gpus, device=str(device),
                                 use_relighting_lora=args.use_relighting_lora, loras=loras,
                                 mode=args.mode, attention=args.attention,
                                 swap_blocks=args.swap_blocks, t5_cpu=args.t5_cpu,
                                 encoders=args.encoders, vae=args.vae, memory=args.memory))
    print(f"placement: {model.describe()}")
    try:
        latent = model.sample(inputs, opts, on_step=bars)
        video = model.decode(latent)
    finally:
        bars.close()
        model.close()
    if video is None:          # a rank > 0 of a torchrun launch: rank 0 writes the file
        return 0
    fps = args.fps or inputs.fps
    save_output_keeping(video, out, fps, flag="--save_file")
    print(f"saved {out} ({video.shape[1]} frames at {fps:g} fps) in {time.time() - t0:.1f} s")
    return 0
