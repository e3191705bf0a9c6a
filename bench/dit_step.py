"""One denoising step of the DiT, ours and the official one (bench_dit.py parts ``ours`` and
``official``): configs, FLOP count, seeded inputs, and the per-size/per-backend timing loops.

Ours: ``AnimateDiT`` with motion tokens and context embedding computed once (timed separately).
Official: ``WanAnimateModel`` through official_shim.py, under autocast, motion encoder inside
every forward. Both get the same weights (seeded per parameter name) and the same inputs.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from common import (GIB, Budget, Size, errmsg, first_blocks, free, init_weights, local_attention,
                    log, materialize, measure, sdpa_context, timed)
from wan_animate.models.attention import NoSequenceParallel
from wan_animate.models.config import DiTConfig
from wan_animate.models.dit import AnimateDiT


# ---- configs -------------------------------------------------------------------------------------

def tiny_config() -> DiTConfig:
    """Small DiT whose hard-coded official widths (CLIP 1280, LIA, face 1024) stay official, so
    the official constructor builds the same key shapes."""
    return DiTConfig(dim=64, ffn_dim=128, text_dim=64, num_heads=2, num_layers=5)


def official_constructor(cfg: DiTConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    if "_wan_animate_overrides" in d:
        raise SystemExit("the official constructor cannot build this config (non-official widths)")
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if not k.startswith("_")}


def dit_flops(cfg: DiTConfig, n: int) -> dict[str, float]:
    """FLOPs of one forward at ``n`` tokens (wan-animate-facts.md §11; 2 FLOPs per MAC)."""
    d, layers, ctx = cfg.dim, cfg.num_layers, cfg.clip_tokens + cfg.text_len
    linear = 2 * (4 * d * d + 2 * d * d + 2 * d * cfg.ffn_dim) * n * layers
    self_attn = 4 * n * n * d * layers
    cross = 4 * n * ctx * d * layers + 4 * ctx * d * d * layers
    face = 2 * n * 2 * d * d * cfg.num_face_adapters
    return {"linear": linear, "self_attention": self_attn, "cross_attention": cross,
            "face_adapter": face, "total": linear + self_attn + cross + face}


# ---- inputs --------------------------------------------------------------------------------------

@dataclass
class Inputs:
    """One step's DiT inputs at one size (batch 1), as the generate loops pass them."""

    x: torch.Tensor            # [1, 16, F, h, w] fp32 noisy latent
    y: torch.Tensor            # [1, 20, F, h, w] 4 mask channels | 16 conditioning latents
    pose: torch.Tensor         # [1, 16, F-1, h, w]
    t: torch.Tensor            # [1] int64


@dataclass
class Shared:
    """Inputs constant over sizes: face crops, text and CLIP features."""

    faces: torch.Tensor        # [1, 3, T, S, S] in [-1, 1]
    context: torch.Tensor      # [Lt, text_dim] (trimmed T5 output)
    clip_fea: torch.Tensor     # [1, 257, clip width]


def make_shared(cfg: DiTConfig, frames: int, text_tokens: int, device: torch.device,
                dtype: torch.dtype, seed: int) -> Shared:
    g = torch.Generator(device=device).manual_seed(seed)
    s = cfg.motion.size
    faces = torch.rand(1, 3, frames, s, s, generator=g, device=device) * 2 - 1
    context = torch.randn(text_tokens, cfg.text_dim, generator=g, device=device) * 0.2
    clip_fea = torch.randn(1, cfg.clip_tokens, cfg.img_emb_in_dim, generator=g, device=device)
    return Shared(faces.to(dtype), context.to(dtype), clip_fea.to(dtype))


def make_inputs(size: Size, frames: int, timestep: int, device: torch.device, dtype: torch.dtype,
                seed: int) -> Inputs:
    g = torch.Generator(device=device).manual_seed(seed)
    h, w = size.latent()
    f = 1 + (frames - 1) // 4 + 1                       # reference frame + latent frames
    x = torch.randn(1, 16, f, h, w, generator=g, device=device)
    mask = torch.zeros(1, 4, f, h, w, device=device)
    mask[:, :, :2] = 1                                  # reference + first guidance frame known
    y = torch.cat([mask, torch.randn(1, 16, f, h, w, generator=g, device=device)], dim=1)
    pose = torch.randn(1, 16, f - 1, h, w, generator=g, device=device)
    return Inputs(x, y.to(dtype), pose.to(dtype), torch.tensor([timestep], device=device))


# ---- timing loops --------------------------------------------------------------------------------

def bench_ours(cfg: DiTConfig, sizes: list[Size], frames: int, backends: list[str | None],
               args: argparse.Namespace, shared: Shared, inputs: dict[str, Inputs],
               device: torch.device, dtype: torch.dtype, budget: Budget,
               outputs: dict[tuple[str, str, str], torch.Tensor],
               save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    log("ours: building AnimateDiT(DiTConfig) on meta, materializing on the device")
    t_build, model = timed(lambda: materialize(lambda: AnimateDiT(cfg), device, dtype, args.seed), device)
    res: dict[str, Any] = {"build_init_s": round(t_build, 2),
                           "weights_gib": round(sum(p.numel() * p.element_size()
                                                    for p in model.parameters()) / GIB, 2),
                           "params": sum(p.numel() for p in model.parameters()), "steps": []}
    if args.compile:
        from wan_animate.models.optimize import compile_blocks

        compile_blocks(model)
        res["compiled"] = True
    save(res)
    log(f"ours: {res['params'] / 1e9:.2f} B params, {res['weights_gib']} GiB, built in {t_build:.1f} s")
    with torch.no_grad():
        rec = measure("ours encode_motion", lambda: model.encode_motion(shared.faces),
                      lambda: model.encode_motion(shared.faces), 1.0, args.repeats, device, budget)
        motion = rec.pop("_out")
        if motion is None:
            motion = model.encode_motion(shared.faces)
        res["encode_motion"] = rec
        log(f"ours: encode_motion {frames} frames: median {rec['median_s']} s")
        t_ctx, ctx = timed(lambda: model.embed_context([shared.context], shared.clip_fea), device)
        res["embed_context_s"] = round(t_ctx, 4)
        variants = [("exact", backends)]
        if args.fast:
            variants.append(("fast", args.fast))
        for mode, mode_backends in variants:
            if mode == "fast":
                from wan_animate.models.fp8 import quantize_dit

                t_q, n_q = timed(lambda: quantize_dit(model), device)
                free(device)
                res["fast_quantize"] = {"linears": n_q, "seconds": round(t_q, 2),
                                        "weights_gib": round(sum(p.numel() * p.element_size()
                                                                 for p in model.parameters()) / GIB, 2)}
                log(f"ours: fast mode, {n_q} linears to fp8 in {t_q:.1f} s, "
                    f"weights {res['fast_quantize']['weights_gib']} GiB")
            for size in sizes:
                inp = inputs[size.name]
                for b in mode_backends:
                    label = (b or "default") if mode == "exact" else f"fast-{b}"
                    attn, how = local_attention(b)
                    model.set_parallel(NoSequenceParallel(attn))
                    name = f"ours {size.name} {label}"
                    row: dict[str, Any] = {"impl": "ours", "size": size.name, "backend": label,
                                           "mode": mode, "attention": how,
                                           "tokens": size.tokens(inp.x.shape[2])}

                    def run(b: str | None = b, inp: Inputs = inp) -> torch.Tensor:
                        with sdpa_context(b, device):
                            return model(inp.x, t=inp.t, clip_fea=shared.clip_fea, context=None,
                                         y=inp.y, pose_latents=inp.pose, motion_vec=motion,
                                         context_emb=ctx)

                    row.update(_step(name, model, run, args, device, budget))
                    _keep(outputs, ("ours", size.name, label), row)
                    res["steps"].append(row)
                    save(res)
    model.set_parallel(NoSequenceParallel())
    model = None  # free the weights (closures above hold the name only)
    free(device)
    return res


def bench_official(off: Any, cfg: DiTConfig, sizes: list[Size], backends: list[str | None],
                   args: argparse.Namespace, shared: Shared, inputs: dict[str, Inputs],
                   device: torch.device, dtype: torch.dtype, budget: Budget,
                   outputs: dict[tuple[str, str, str], torch.Tensor],
                   save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    import official_shim

    autocast = dtype if dtype != torch.float32 else None
    log("official: building WanAnimateModel on meta, materializing on the device")
    kwargs = official_constructor(cfg)
    t_build, model = timed(lambda: init_weights(
        official_shim.build_official(off, device, dtype, **kwargs), args.seed), device)
    res: dict[str, Any] = {"build_init_s": round(t_build, 2), "diffusers": off.diffusers,
                           "params": sum(p.numel() for p in model.parameters()),
                           "autocast": str(autocast), "steps": []}
    save(res)
    log(f"official: {res['params'] / 1e9:.2f} B params, built in {t_build:.1f} s "
        f"(diffusers: {off.diffusers})")
    first = inputs[sizes[0].name]
    h, w = first.x.shape[3] // 2, first.x.shape[4] // 2
    embedded = torch.zeros(1, cfg.dim, first.x.shape[2], h, w, device=device, dtype=dtype)
    try:
        rec = measure("official motion path",
                      lambda: official_shim.official_motion_path(model, embedded, first.pose,
                                                                 shared.faces, autocast),
                      lambda: official_shim.official_motion_path(model, embedded, first.pose,
                                                                 shared.faces, autocast),
                      1.0, args.repeats, device, budget)
        rec.pop("_out")
    except Exception as e:  # noqa: BLE001 - report it; the forwards below are timed anyway
        rec = {"error": errmsg(e), "median_s": None}
    res["motion_path_per_forward"] = rec
    log(f"official: motion path (pose add + LIA on {args.frames} faces + face encoder) per forward: "
        f"median {rec['median_s']} s")
    embedded = None
    for size in sizes:
        inp = inputs[size.name]
        for b in backends:
            label = b or "default"
            name = f"official {size.name} {label}"
            row: dict[str, Any] = {"impl": "official", "size": size.name, "backend": label,
                                   "tokens": size.tokens(inp.x.shape[2])}

            def run() -> torch.Tensor:
                with sdpa_context(b, device):
                    return official_shim.official_forward(model, inp.x, inp.t, shared.clip_fea,
                                                          shared.context, inp.y, inp.pose,
                                                          shared.faces, autocast)

            row.update(_step(name, model, run, args, device, budget))
            _keep(outputs, ("official", size.name, label), row)
            res["steps"].append(row)
            save(res)
    model = None  # free the weights before anything else is built
    free(device)
    return res


def _step(name: str, model: nn.Module, run: Callable[[], torch.Tensor], args: argparse.Namespace,
          device: torch.device, budget: Budget) -> dict[str, Any]:
    """Warm up on the first blocks, time full forwards; errors are recorded, not raised."""
    layers = len(model.blocks)
    k = min(args.warmup_blocks, layers) if args.warmup_blocks > 0 else layers

    def warm() -> torch.Tensor:
        with first_blocks(model, k):
            return run()

    if not budget.fits(args.min_step_s):
        budget.skip(name)
        return {"skipped": True}
    try:
        with torch.no_grad():
            rec = measure(name, run, warm, layers / k, args.repeats, device, budget)
    except Exception as e:  # noqa: BLE001 - no kernel, OOM, assert: report it and go on
        free(device)
        log(f"{name}: ERROR {errmsg(e)}")
        return {"error": errmsg(e)}
    log(f"{name}: median {rec['median_s']} s of {rec['times_s']} (warm-up {rec['warmup_s']} s on "
        f"{k} blocks), peak {rec['peak_gib']} GiB")
    return rec


def _keep(outputs: dict, key: tuple[str, str, str], row: dict[str, Any]) -> None:
    out = row.pop("_out", None)
    if out is not None:
        row["out_finite"] = bool(torch.isfinite(out).all())
        row["out_std"] = round(float(out.float().std()), 4)
        outputs[key] = out.float().cpu()
