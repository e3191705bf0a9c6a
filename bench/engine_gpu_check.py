"""GPU check of the engine's speed and memory options on tiny official-layout weights, plus the
full-size VAE decode under a small card's memory cap.

python3 bench/engine_gpu_check.py [--cap-gib 24] [--out engine_gpu_check.json]
1. In-process generation (compiled blocks) on CUDA: exact; swap_blocks + t5_cpu (must equal
   exact bit for bit); fast (fp8 ``torch._scaled_mm`` linears; mean |diff| vs exact reported);
   fast + swap (must equal fast).
2. The full-size Wan VAE (random weights, fp32) decoding 20 latent frames to 77 frames of
   1280x720 with the process capped at ``--cap-gib`` minus what the rest of a block-swapped
   24 GB setup keeps on the GPU during decode (CLIP 1.2 GiB; the DiT is parked on the host).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))          # bench/ (common.py)
from wan_animate.checkpoints.tiny import write_tiny_checkpoint  # noqa: E402
from wan_animate.cli.demo_media import face_frames, pose_frames, reference_image  # noqa: E402
from wan_animate.engine import ModelSpec, load_model, unload_all  # noqa: E402
from wan_animate.sampling.options import AnimateInputs, SampleOptions  # noqa: E402

GIB = 1024 ** 3


def engine_runs(res: dict) -> None:
    ck = write_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny")
    inputs = AnimateInputs(pose=pose_frames(9, 64, 96), face=face_frames(9),
                           reference=reference_image(80, 96), fps=16)
    opts = SampleOptions(frame_num=5, steps=3, seed=2)
    videos = {}
    for label, kw in (("exact", {}), ("swap+t5_cpu", {"swap_blocks": 1, "t5_cpu": True}),
                      ("fast", {"mode": "fast"}), ("fast+swap", {"mode": "fast", "swap_blocks": 1})):
        try:
            m = load_model(ModelSpec(str(ck), device="cuda", **kw))
            videos[label] = m.decode(m.sample(inputs, opts)).float().cpu()
            dit = m._models().dit
            res[label] = {"finite": bool(torch.isfinite(videos[label]).all()),
                          "fp8_linears": sum(type(x).__name__ == "Fp8Linear" for x in dit.modules())}
        except Exception as e:  # noqa: BLE001 - report and go on
            res[label] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            unload_all()
        print(label, res[label], flush=True)
    if "exact" in videos and "swap+t5_cpu" in videos:
        res["swap_equals_exact"] = bool(torch.equal(videos["exact"], videos["swap+t5_cpu"]))
        res["swap_max_abs"] = float((videos["exact"] - videos["swap+t5_cpu"]).abs().max())
    if "fast" in videos:
        res["fast_mean_abs_vs_exact"] = float((videos["fast"] - videos["exact"]).abs().mean())
        if "fast+swap" in videos:
            res["fast_swap_equals_fast"] = bool(torch.equal(videos["fast"], videos["fast+swap"]))


@torch.no_grad()
def vae_under_cap(res: dict, cap_gib: float) -> None:
    from wan_animate.models.vae import VAEConfig, WanVAE

    dev = torch.device("cuda", torch.cuda.current_device())
    cfg = VAEConfig()
    from common import materialize

    vae = materialize(lambda: WanVAE(cfg), dev, torch.float32, 0)
    g = torch.Generator(device=dev).manual_seed(0)
    z = torch.randn(1, cfg.z_dim, 20, 90, 160, generator=g, device=dev)
    budget = cap_gib - 1.2                      # CLIP stays on the GPU during decode
    total = torch.cuda.get_device_properties(dev).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(budget * GIB / total, dev)
    torch.cuda.reset_peak_memory_stats(dev)
    row = {"cap_gib": round(budget, 2), "latent": list(z.shape)}
    try:
        out = vae.decode(z)
        row.update(frames=out.shape[2], finite=bool(torch.isfinite(out).all()),
                   peak_gib=round(torch.cuda.max_memory_allocated(dev) / GIB, 2))
    except Exception as e:  # noqa: BLE001 - OOM under the cap: report it
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    torch.cuda.set_per_process_memory_fraction(1.0, dev)
    res["vae_decode_720p_77_frames_fp32"] = row
    print("vae", row, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cap-gib", type=float, default=24.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    engine_runs(res)
    vae_under_cap(res, args.cap_gib)
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
