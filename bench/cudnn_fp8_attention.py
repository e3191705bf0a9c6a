"""Candidate fp8 attention for the fast mode: cuDNN's fp8 SDPA (``nvidia-cudnn-frontend``) against
FA3 fp8 and FA3 bf16, at the DiT's self-attention shapes, with accuracy vs fp32.

python3 bench/cudnn_fp8_attention.py [--tokens 75600,32760] [--out kernels_fp8.json]
Needs the ``cudnn`` Python package (carried as a wheel in .whl/) and, for the FA3 rows, FA3.
q/k/v are [1, L, 40, 128] bf16 (the DiT layout); cuDNN reads them through BSHD strides, per-tensor
e4m3 scales, softmax probabilities scaled by 448 before their e4m3 cast. On Hopper cuDNN 9.19
has fp8 SDPA with fp8 output only (bf16 output is Blackwell-only): the output is e4m3 scaled by
448 / max|v| (|o| <= max|v|) and dequantized to bf16 afterwards.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent))          # bench/ (common.py)
from common import rel_l2 as rel, timed  # noqa: E402
from wan_animate.models import flash3  # noqa: E402

HEADS, DIM = 40, 128
E4M3_MAX = 448.0


class CudnnFp8Attention:
    """One cuDNN fp8 SDPA graph for q/k/v [1, L, N, D] e4m3 -> [1, L, N, D] bf16 (built per L)."""

    def __init__(self, tokens: int) -> None:
        import cudnn

        self.cudnn = cudnn
        self.handle = cudnn.create_handle()
        cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream().cuda_stream)
        fp8, f32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
        g = cudnn.pygraph(io_data_type=fp8, intermediate_data_type=f32, compute_data_type=f32,
                          handle=self.handle)
        dims, stride = (1, HEADS, tokens, DIM), (tokens * HEADS * DIM, DIM, HEADS * DIM, 1)
        q, k, v = (g.tensor(uid=u, dim=dims, stride=stride, data_type=fp8) for u in (0, 1, 2))
        sc = {u: g.tensor(uid=u, dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=f32)
              for u in (5, 6, 7, 8, 9, 10)}
        o, _, _, amax_o = g.sdpa_fp8(q=q, k=k, v=v, descale_q=sc[5], descale_k=sc[6], descale_v=sc[7],
                                     descale_s=sc[8], scale_s=sc[9], scale_o=sc[10],
                                     generate_stats=False, attn_scale=DIM ** -0.5,
                                     use_causal_mask=False)
        o.set_uid(3).set_output(True).set_dim(dims).set_stride(stride).set_data_type(fp8)
        amax_o.set_uid(12).set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(f32)
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        g.check_support()
        g.build_plans()
        self.graph = g
        self.workspace = torch.empty(g.get_workspace_size(), device="cuda", dtype=torch.uint8)
        self.amax = torch.empty(1, 1, 1, 1, device="cuda")
        one = torch.ones(1, 1, 1, 1, device="cuda")
        self.s_scale, self.s_descale = one * E4M3_MAX, one / E4M3_MAX

    @staticmethod
    def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-tensor e4m3: x -> (x8, descale [1, 1, 1, 1])."""
        descale = (x.abs().amax().float() / E4M3_MAX).clamp_min(1e-12).reshape(1, 1, 1, 1)
        return (x.float() / descale).to(torch.float8_e4m3fn), descale

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 prequantized: tuple | None = None) -> torch.Tensor:
        (q8, qd), (k8, kd), (v8, vd) = prequantized or (self.quantize(t) for t in (q, k, v))
        out = torch.empty(q.shape, device="cuda", dtype=torch.float8_e4m3fn)
        self.graph.execute({0: q8, 1: k8, 2: v8, 5: qd, 6: kd, 7: vd, 8: self.s_descale,
                            9: self.s_scale, 10: 1 / vd, 3: out, 12: self.amax},
                           self.workspace, handle=self.handle)
        return (out.float() * vd).to(torch.bfloat16)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="75600,32760")
    ap.add_argument("--accuracy-tokens", type=int, default=8192)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    fa3 = flash3.fa3_installed()
    for n in [args.accuracy_tokens] + [int(t) for t in args.tokens.split(",")]:
        g = torch.Generator("cuda").manual_seed(n)
        q, k, v = (torch.randn(1, n, HEADS, DIM, generator=g, device="cuda").to(torch.bfloat16)
                   for _ in range(3))
        flops = 4 * n * n * DIM * HEADS
        kernels = {}
        try:
            att = CudnnFp8Attention(n)
            pre = tuple(att.quantize(t) for t in (q, k, v))
            kernels["cudnn_fp8 (kernel only)"] = lambda: att(q, k, v, pre)
            kernels["cudnn_fp8 (incl. quantize)"] = lambda: att(q, k, v)
        except Exception as e:  # noqa: BLE001 - report and go on
            rows.append({"tokens": n, "kernel": "cudnn_fp8", "error": f"{type(e).__name__}: {e}"})
            print(rows[-1], flush=True)
        if fa3:
            kernels["fa3_fp8 (incl. quantize)"] = lambda: flash3.fa3_attention_fp8(q, k, v)
            kernels["fa3 bf16"] = lambda: flash3.fa3_attention(q, k, v)
        ref = flash3.sdpa_reference(q, k, v) if n == args.accuracy_tokens else None
        for name, fn in kernels.items():
            row = {"tokens": n, "kernel": name}
            try:
                if ref is not None:
                    row["rel_l2_vs_fp32"] = rel(fn(), ref)
                else:
                    fn()
                    t = statistics.median(timed(fn, q.device)[0] for _ in range(5))
                    row.update(ms=round(t * 1e3, 2), tflops=round(flops / t / 1e12, 1),
                               x40_layers_s=round(40 * t, 2))
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            print(json.dumps(row), flush=True)
        del q, k, v, ref
        torch.cuda.empty_cache()
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
