"""The results of bench_dit.py: ratios and parity added to the JSON, the markdown tables printed at
the end, and the ``machine`` block (GPU, torch, cuDNN, SDPA flash providers, optional packages).
"""
from __future__ import annotations

import datetime
import json
import platform
from typing import Any

import torch

from common import GIB, REPO, rel_l2
from dit_step import dit_flops
from wan_animate.models.config import DiTConfig


def summarize(results: dict[str, Any], cfg: DiTConfig, outputs: dict) -> None:
    """Add ratios and parity numbers to ``results`` (ours/official per size and backend)."""
    steps = {(s["impl"], s["size"], s["backend"]): s for part in ("ours", "official")
             for s in results.get(part, {}).get("steps", [])}
    ratios, parity = [], []
    for s in steps.values():
        fl = dit_flops(cfg, s["tokens"])["total"]
        s["flop"] = fl
        if s.get("median_s"):
            s["tflops"] = round(fl / s["median_s"] / 1e12, 1)
    for (impl, size, backend), s in steps.items():
        if impl != "ours":
            continue
        for (o_impl, o_size, o_backend), o in steps.items():
            if o_impl != "official" or o_size != size:
                continue
            if s.get("median_s") and o.get("median_s"):
                ratios.append({"size": size, "backend": backend, "official_backend": o_backend,
                               "ours_s": s["median_s"], "official_s": o["median_s"],
                               "ratio_ours_over_official": round(s["median_s"] / o["median_s"], 3)})
        # the official run on the same SDPA kernel, else on cuDNN (for ours on FA3 / fast mode)
        a = outputs.get(("ours", size, backend))
        b = outputs.get(("official", size, backend), outputs.get(("official", size, "cudnn")))
        if a is not None and b is not None:
            parity.append({"size": size, "backend": backend, "rel_l2_ours_vs_official": rel_l2(a, b)})
    by_size: dict[str, list] = {}
    for (impl, size, backend), out in outputs.items():
        by_size.setdefault(f"{impl} {size}", []).append((backend, out))
    for key, outs in by_size.items():
        for (b1, o1), (b2, o2) in zip(outs, outs[1:]):
            parity.append({"what": key, "backends": f"{b2} vs {b1}", "rel_l2": rel_l2(o2, o1)})
    results["ratios"], results["parity"] = ratios, parity


def markdown(results: dict[str, Any]) -> str:
    lines = ["", "## DiT, one denoising forward (guide 1.0), batch 1", "",
             "| impl | size | tokens | SDPA | median s | runs s | TFLOP/s | peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for part in ("ours", "official"):
        for s in results.get(part, {}).get("steps", []):
            lines.append(f"| {s['impl']} | {s['size']} | {s['tokens']:,} | {s['backend']} | "
                         f"{s.get('median_s', s.get('error', 'skipped'))} | {s.get('times_s', '')} | "
                         f"{s.get('tflops', '')} | {s.get('peak_gib', '')} |")
    if results.get("ratios"):
        lines += ["", "| size | ours (attention) | official SDPA | ours s | official s | ours / official |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['backend']} | {r.get('official_backend', r['backend'])} | "
                  f"{r['ours_s']} | {r['official_s']} | {r['ratio_ours_over_official']} |"
                  for r in results["ratios"]]
    for p in results.get("parity", []):
        lines.append(f"- parity {json.dumps(p)}")
    ours, off = results.get("ours", {}), results.get("official", {})
    if ours.get("encode_motion"):
        lines.append(f"- ours encode_motion (once per clip): {ours['encode_motion']['median_s']} s; "
                     f"embed_context (once per video): {ours.get('embed_context_s')} s")
    if off.get("motion_path_per_forward"):
        lines.append(f"- official motion path inside every forward: "
                     f"{off['motion_path_per_forward']['median_s']} s")
    if results.get("attention"):
        lines += ["", "## Self-attention kernel alone (one layer, all heads)", "",
                  "| size | tokens | SDPA | ms | TFLOP/s | x layers s |", "|---|---|---|---|---|---|"]
        lines += [f"| {a['size']} | {a['tokens']:,} | {a['backend']} | "
                  f"{a.get('median_ms', a.get('error', ''))} | {a.get('tflops', '')} | "
                  f"{a.get('per_forward_s', '')} |" for a in results["attention"]]
    for a in results.get("attention_accuracy", []):
        lines.append(f"- attention accuracy {json.dumps(a)}")
    if results.get("ours", {}).get("fast_quantize"):
        lines.append(f"- fast mode quantization {json.dumps(results['ours']['fast_quantize'])}")
    if results.get("vae"):
        lines += ["", "## VAE (ours)", "", "| op | size | frames | dtype | median s | peak act GiB |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {v['op']} | {v['size']} | {v['frames']} | {v['dtype']} | "
                  f"{v.get('median_s', v.get('error', 'skipped'))} | {v.get('activation_peak_gib', '')} |"
                  for v in results["vae"]]
    ld = results.get("load")
    if ld and not ld.get("skipped"):
        lines += ["", f"## Weight load: {ld['blocks']} blocks, {ld['file_gib']} GiB: cold "
                      f"{ld['load_cold_s']} s ({ld['load_cold_gib_per_s']} GiB/s), warm "
                      f"{ld['load_warm_s']} s; full DiT ({ld['full_dit_gib']} GiB) ~"
                      f"{ld['full_dit_estimate_cold_s']} s cold / {ld['full_dit_estimate_warm_s']} s "
                      f"warm ({ld['extrapolation']})"]
    if results.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(results["skipped"])]
    return "\n".join(lines)


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    import importlib.util

    import torch.nn.attention as tna

    if hasattr(tna, "list_flash_attention_impls"):  # FA3/FA4 providers registered with SDPA
        info["sdpa_flash_impls"] = list(tna.list_flash_attention_impls())
    info["packages"] = {n: importlib.util.find_spec(n) is not None for n in (
        "flash_attn", "flash_attn_interface", "flash_attn_3", "sageattention", "cudnn", "diffusers")}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / GIB, 1), sms=p.multi_processor_count,
                    cuda=torch.version.cuda)
    try:
        import subprocess

        info["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info
