"""Seconds per new prompt / reference with parked encoders vs resident ones (issue 13).

python3 bench/encoder_parking.py [--out $OUT/encoder_parking.json]

Full-size umT5-XXL (bf16) and CLIP ViT-H (fp16) with random weights on one GPU: the encode of
a 512-token prompt / one 224x224 reference when the weights are resident, when they are parked
in pinned host memory (:class:`wan_animate.models.offload.Parked`: copy in, encode, free), and
umT5 on the CPU (``t5_cpu``). Median of 3 after one warm-up.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import materialize  # noqa: E402

from wan_animate.models.clip import CLIPVisionConfig, CLIPVisionEncoder  # noqa: E402
from wan_animate.models.offload import Parked  # noqa: E402
from wan_animate.models.t5 import T5Config, T5Encoder  # noqa: E402


def timed(fn, device: torch.device, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 3)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cpu-t5", action="store_true", help="also time umT5 on the CPU (slow)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    res: dict = {"device": torch.cuda.get_device_name(0)}
    ids = torch.randint(1, 256000, (1, 512), device=dev)
    mask = torch.ones(1, 512, dtype=torch.long, device=dev)
    img = torch.randn(1, 3, 224, 224, device=dev, dtype=torch.float16)
    t5 = materialize(lambda: T5Encoder(T5Config()), dev, torch.bfloat16, 1)
    clip = materialize(lambda: CLIPVisionEncoder(CLIPVisionConfig()), dev, torch.float16, 2)
    res["t5_resident_s"] = timed(lambda: t5(ids, mask), dev)
    res["clip_resident_s"] = timed(lambda: clip(img), dev)
    for name, net, run in (("t5", t5, lambda m: m(ids, mask)), ("clip", clip, lambda m: m(img))):
        parked = Parked(net, dev)
        res[f"{name}_gib"] = round(parked.host_bytes() / 1024 ** 3, 2)
        res[f"{name}_gpu_gib_parked"] = round(torch.cuda.memory_allocated(dev) / 1024 ** 3, 2)

        def visit(parked=parked, run=run):
            with parked.visiting() as m:
                return run(m)

        res[f"{name}_parked_s"] = timed(visit, dev)
    if args.cpu_t5:                # t5's weights are on the host now (parked): run it there
        t0 = time.perf_counter()
        t5(ids.cpu(), mask.cpu())
        res["t5_cpu_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
