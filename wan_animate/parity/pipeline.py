"""Parity of ``generate`` against ``fixtures/official/pipeline`` (official generate, tiny weights).

Builds the bundle from the component fixtures of the same set (dit_animate, vae, t5,
clip_visual, relighting_lora), reads ``src/`` with our video reader, injects the stored
per-clip noise and prompt token ids, runs every run of config.json and compares the video
and the recorded intermediates (DiT calls, VAE encodes/decodes, CLIP features).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from wan_animate.checkpoints.load import load_into, read_safetensors
from wan_animate.models.bundle import ModelBundle
from wan_animate.models.clip import CLIPVisionConfig, CLIPVisionEncoder, visual_keys
from wan_animate.models.lora import apply_lora, normalize_lora_state
from wan_animate.models.t5 import T5Config, T5Encoder
from wan_animate.models.vae import VAEConfig, build_vae
from wan_animate.parity.common import Comparison, compare, exact, read_config, tolerance
from wan_animate.parity.dit_animate import build_dit
from wan_animate.preprocess.video_io import read_image, read_video
from wan_animate.sampling.generate import generate
from wan_animate.sampling.options import AnimateInputs, Overrides, SampleOptions

F32 = torch.float32


def _component(folder: Path, cfg: dict, name: str) -> Path:
    spec = str(cfg.get("components", {}).get(name, f"../{name}"))
    return (folder / spec.split()[0]).resolve()


def build_bundle(folder: Path, cfg: dict, relight: bool) -> ModelBundle:
    dit, _ = build_dit(_component(folder, cfg, "dit_animate"))
    if relight:
        lf = _component(folder, cfg, "relighting_lora")
        lcfg = read_config(lf)
        pairs = normalize_lora_state(read_safetensors(lf / "weights.safetensors"), str(lf),
                                     alpha=float(lcfg.get("alpha", 0)) or None)
        apply_lora(dit, pairs, str(lf), merge=False)   # the official path keeps PEFT unmerged
    vf = _component(folder, cfg, "vae")
    vae = load_into(build_vae(VAEConfig.from_official(read_config(vf)["constructor"])),
                    read_safetensors(vf / "weights.safetensors"), str(vf), dtype=F32)
    tf = _component(folder, cfg, "t5")
    with torch.device("meta"):
        t5 = T5Encoder(T5Config.from_constructor(read_config(tf)["constructor"]))
    load_into(t5, read_safetensors(tf / "weights.safetensors"), str(tf), dtype=F32)
    cf = _component(folder, cfg, "clip_visual")
    with torch.device("meta"):
        clip = CLIPVisionEncoder(CLIPVisionConfig.from_constructor(read_config(cf)["constructor"]))
    load_into(clip, visual_keys(read_safetensors(cf / "weights.safetensors")), str(cf), dtype=F32)
    return ModelBundle(dit=dit, vae=vae.eval(), t5=t5.eval(), clip=clip.eval(), tokenizer=None,
                       device=torch.device("cpu"), dtype=F32)


def read_inputs(src: Path, replace: bool) -> AnimateInputs:
    pose, fps = read_video(src / "src_pose.mp4")
    face, _ = read_video(src / "src_face.mp4")
    bg = mask = None
    if replace:
        bg, _ = read_video(src / "src_bg.mp4")
        mask, _ = read_video(src / "src_mask.mp4")
    return AnimateInputs(pose=pose, face=face, reference=read_image(src / "src_ref.png"),
                         background=bg, mask=mask, fps=fps)


@torch.no_grad()
def run(folder: Path) -> list[Comparison]:
    cfg = read_config(folder)
    name = cfg["fixture"]
    io = read_safetensors(folder / "io.safetensors")
    tol_v = tolerance(cfg, "video")
    tol_i = tolerance(cfg, "intermediates")
    results: list[Comparison] = []
    bundles: dict[bool, ModelBundle] = {}
    for run_cfg in cfg["runs"]:
        tag = run_cfg["name"]
        relight = bool(run_cfg.get("use_relighting_lora"))
        if relight not in bundles:
            bundles[relight] = build_bundle(folder, cfg, relight)
        inputs = read_inputs(folder / "src", bool(run_cfg["replace_flag"]))
        opts = SampleOptions(mode="replace" if run_cfg["replace_flag"] else "animate",
                             frame_num=run_cfg["clip_len"], refert_num=run_cfg["refert_num"],
                             steps=run_cfg["sampling_steps"], shift=run_cfg["shift"],
                             guide_scale=run_cfg["guide_scale"], solver=run_cfg["sample_solver"],
                             seed=run_cfg["seed"])
        noise = [io[f"{tag}.clip{k}.noise"][None] for k in range(run_cfg["num_clips"])]
        ov = Overrides(noise=noise, prompt_ids=(io["prompt_ids"], io["prompt_mask"]),
                       negative_ids=(io["neg_prompt_ids"], io["neg_prompt_mask"]), trace=[])
        video = generate(bundles[relight], inputs, opts, overrides=ov)
        results.append(compare(name, f"{tag}.video", video, io[f"{tag}.video"], *tol_v))
        results += _intermediates(name, tag, ov.trace or [], io, run_cfg, tol_i)
    return results


def _intermediates(name: str, tag: str, trace: list, io: dict, run_cfg: dict,
                   tol: tuple) -> list[Comparison]:
    by: dict[str, list[torch.Tensor]] = defaultdict(list)
    for key, t in trace:
        by[key].append(t)
    out: list[Comparison] = []
    # DiT calls in official order: cond, then uncond when guide_scale > 1
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    unc = iter(by["dit.out_uncond"])
    for x, t, o in zip(by["dit.x"], by["dit.t"], by["dit.out"]):
        calls.append((x, t, o))
        if run_cfg["guide_scale"] > 1:
            calls.append((x, t, next(unc)))
    n_calls = run_cfg["calls"]["dit"]
    out.append(exact(name, f"{tag}.dit_calls", len(calls), n_calls))
    for i, (x, t, o) in enumerate(calls[:n_calls]):
        p = f"{tag}.dit_call{i:02d}"
        out.append(exact(name, f"{p}.t", t, io[f"{p}.t"]))
        out.append(compare(name, f"{p}.x", x, io[f"{p}.x"], *tol))
        out.append(compare(name, f"{p}.out", o, io[f"{p}.out"], *tol))
    per_clip = 3
    for k in range(run_cfg["num_clips"]):
        ours = [by["vae_encode.pose"][k], by["vae_encode.ref"][0], by["vae_encode.cond"][k]]
        for j in range(per_clip):
            key = f"{tag}.vae_encode{per_clip * k + j:02d}.out"
            if key in io:
                out.append(compare(name, key, ours[j], io[key], *tol))
        key = f"{tag}.vae_decode{k:02d}.in"
        if key in io:
            out.append(compare(name, key, by["vae_decode.in"][k], io[key], *tol))
        key = f"{tag}.clip_visual{k:02d}.out"
        if key in io:
            out.append(compare(name, key, by["clip_visual.out"][0][0], io[key][0], *tol))
    return out
