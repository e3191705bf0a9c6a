"""VAE encode / decode per rank of a P-rank pool (split by rows) and in bands on one GPU.

Each rank of a pool of P runs :func:`wan_animate.distributed.vae_split.split_decode` /
``split_encode`` on its band of rows. On one GPU torch's fake process group measures what rank
``r`` of P holds and computes: the collectives are no-ops (their receive buffers are filled with
data of the right kind here, so kernels see real-looking values) while allocations and kernels
are real. The point-to-point bytes each rank sends (halo rows, the scatter of the input rows,
the gather of the output rows) and the all-gathers of the mid attention are counted, and the
time they add at NVLink / PCIe bandwidth is added to the measured compute:
``estimate = compute + bytes / bandwidth + messages x latency``.

Also the whole VAE (``bands 1``) and the banded one-GPU mode (``--bands``) on one GPU.

    python3 bench/vae_split.py --sizes 1280x720 832x480 --frames 77 --pools 1 2 4 8 \
        --bands 2 4 8 --out results/vae_split.json

fp32 weights (the default of the pack), random init (timing and memory do not depend on them).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_animate.distributed import vae_split  # noqa: E402
from wan_animate.models.vae import VAEConfig, build_vae  # noqa: E402

GIB = 1024 ** 3
NVLINK_GBPS = 450.0   # H100/H200 NVLink 4, per direction
PCIE_GBPS = 50.0      # PCIe 5.0 x16, per direction
MSG_LATENCY_S = 15e-6


class Traffic:
    """Counts what this rank sends and fills what it receives (fake process group)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.messages = 0
        self._orig: dict[str, object] = {}

    def install(self) -> None:
        for name in ("batch_isend_irecv", "send", "recv", "all_gather", "broadcast"):
            self._orig[name] = getattr(dist, name)
        orig = self._orig

        def batch_isend_irecv(ops):  # noqa: ANN001, ANN202
            works = orig["batch_isend_irecv"](ops)
            for op in ops:
                if op.op in (dist.isend,):
                    self._sent(op.tensor)
                else:
                    op.tensor.normal_()
            return works

        def send(tensor, *a, **k):  # noqa: ANN001, ANN202
            self._sent(tensor)
            return orig["send"](tensor, *a, **k)

        def recv(tensor, *a, **k):  # noqa: ANN001, ANN202
            out = orig["recv"](tensor, *a, **k)
            tensor.normal_()
            return out

        def all_gather(outs, inp, *a, **k):  # noqa: ANN001, ANN202
            work = orig["all_gather"](outs, inp, *a, **k)
            for o in outs:
                o.copy_(inp)
            self.bytes += inp.numel() * inp.element_size() * (len(outs) - 1)
            self.messages += len(outs) - 1
            return work

        def broadcast(tensor, src=0, *a, **k):  # noqa: ANN001, ANN202
            if dist.get_rank() != src:
                tensor.normal_()
            else:
                self._sent(tensor)
            return orig["broadcast"](tensor, src, *a, **k)

        for name, fn in (("batch_isend_irecv", batch_isend_irecv), ("send", send), ("recv", recv),
                         ("all_gather", all_gather), ("broadcast", broadcast)):
            setattr(dist, name, fn)

    def _sent(self, t: torch.Tensor) -> None:
        self.bytes += t.numel() * t.element_size()
        self.messages += 1


@contextlib.contextmanager
def fake_pool(rank: int, world: int):
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def measure(fn) -> tuple[float, float, object]:  # noqa: ANN001
    """(seconds, peak GiB above what was allocated before, result) of ``fn()``."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    return secs, (torch.cuda.max_memory_allocated() - base) / GIB, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1280x720", "832x480"])
    ap.add_argument("--frames", type=int, default=77)
    ap.add_argument("--pools", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--roles", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--bands", nargs="+", type=int, default=[2, 4, 8])
    ap.add_argument("--ops", nargs="+", default=["decode", "encode"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = False
    vae = build_vae(VAEConfig(), device="cuda").eval()
    for p in vae.parameters():
        torch.nn.init.normal_(p, std=0.02)
    traffic = Traffic()
    traffic.install()
    rows: list[dict] = []
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        lat = (1, 16, vae.config.latent_frames(args.frames), h // 8, w // 8)
        z = torch.randn(*lat)
        video = (torch.rand(1, 3, args.frames, h, w) * 2 - 1).pin_memory()
        work = {"decode": lambda: vae.decode(z.cuda()), "encode": lambda: vae.encode(video)}
        for op in args.ops:
            work[op]()  # warm-up (cuDNN plans, allocator)
            vae.bands = 1
            secs, peak, ref = measure(work[op])
            ref = ref.cpu()
            torch.backends.cudnn.benchmark = True  # other conv algorithms: the run's own noise
            noise = (work[op]().cpu() - ref).abs().max().item()
            torch.backends.cudnn.benchmark = False
            rows.append({"size": size, "op": op, "mode": "whole", "pool": 1, "rank": 0,
                         "compute_s": round(secs, 3), "peak_gib": round(peak, 2),
                         "max_abs_vs_whole": f"{noise:.1e} (cuDNN benchmark on)"})
            print(rows[-1], flush=True)
            for k in args.bands:
                vae.bands = k
                secs, peak, out = measure(work[op])
                diff = (out.cpu() - ref).abs().max().item()
                del out
                rows.append({"size": size, "op": op, "mode": f"bands {k}", "pool": 1, "rank": 0,
                             "compute_s": round(secs, 3), "peak_gib": round(peak, 2),
                             "max_abs_vs_whole": f"{diff:.1e}"})
                print(rows[-1], flush=True)
            del ref
            vae.bands = 1
            for pool in args.pools:
                for rank in args.roles:
                    if rank >= pool:
                        continue
                    with fake_pool(rank, pool):
                        traffic.bytes = traffic.messages = 0
                        x = (z if op == "decode" else video) if rank == 0 else None
                        shape = lat if op == "decode" else tuple(video.shape)
                        fn = vae_split.split_decode if op == "decode" else vae_split.split_encode
                        secs, peak, _ = measure(lambda: fn(vae, x, shape))
                    sent = traffic.bytes
                    row = {"size": size, "op": op, "mode": "split", "pool": pool, "rank": rank,
                           "compute_s": round(secs, 3), "peak_gib": round(peak, 2),
                           "sent_gib": round(sent / GIB, 3), "messages": traffic.messages}
                    for name, gbps in (("nvlink", NVLINK_GBPS), ("pcie", PCIE_GBPS)):
                        row[f"est_{name}_s"] = round(secs + sent / (gbps * 1e9)
                                                     + traffic.messages * MSG_LATENCY_S, 3)
                    rows.append(row)
                    print(row, flush=True)
    print("\n| size | op | mode | pool | rank | compute s | peak GiB | sent GiB | msgs | est NVLink s "
          "| est PCIe s | max abs vs whole |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['op']} | {r['mode']} | {r['pool']} | {r['rank']} | {r['compute_s']} | "
              f"{r['peak_gib']} | {r.get('sent_gib', '-')} | {r.get('messages', '-')} | "
              f"{r.get('est_nvlink_s', '-')} | {r.get('est_pcie_s', '-')} | "
              f"{r.get('max_abs_vs_whole', '-')} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
