#!/usr/bin/env bash
# Issue 8, device call 1 of 2 (bench/README.md): the kernel ceilings (cuDNN SDPA, FA3 bf16, FA3
# fp8, bf16 and fp8 GEMMs) with their accuracy, then exact/fast mode vs the fp32 reference.
# FA3 comes as a carried wheel in .whl/ (built as bench/README.md says).
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
python3 -c "import torch, flash_attn_interface; print('FA3 import ok', torch.__version__)" 2>&1 | tail -2
command -v cuobjdump > /dev/null && cuobjdump --list-elf /tmp/site/flash_attn_3/_C.abi3.so 2>&1 | head -5
python3 bench/bench_dit.py --parts attn --backends cudnn,fa3 --fast fa3_fp8 --repeats 5 \
    --out "$OUT/kernels.json" 2>&1 | tee "$OUT/kernels.log"
python3 bench/exact_vs_fp32.py --exact cudnn,fa3 --fast fa3_fp8,cudnn --out "$OUT/exact_vs_fp32.json" 2>&1 \
    | tee "$OUT/exact_vs_fp32.log"
