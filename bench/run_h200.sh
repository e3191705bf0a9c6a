#!/usr/bin/env bash
# The one device command of the issue-8 benchmark (bench/README.md): run from the repository root
# on an H200 with `.bench_carry` carried (official Wan2.2 sources, never committed).
# Extra arguments go to bench_dit.py (e.g. --parts ours,official --backends cudnn).
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit \
    --format=csv > "$OUT/nvidia-smi.csv" 2>&1
cat "$OUT/nvidia-smi.csv"
OFFICIAL=()
if [ -f .bench_carry/wan22/wan/modules/animate/model_animate.py ]; then
    OFFICIAL=(--official .bench_carry/wan22)
else
    echo "no .bench_carry/wan22: the official side is not run"
fi
python3 bench/bench_dit.py --sizes 1280x720,832x480 --frames 77 "${OFFICIAL[@]}" \
    --out "$OUT/results.json" "$@" 2>&1 | tee "$OUT/bench.log"
rc=${PIPESTATUS[0]}
nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv,noheader >> "$OUT/nvidia-smi.csv" 2>&1
exit "$rc"
