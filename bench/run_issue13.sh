#!/usr/bin/env bash
# The device commands of issue 13's fourth-session round (bench/README.md, "one placement"):
#   run(kind="nvidia-h200", carry=[".whl"], command="bash bench/run_issue13.sh both")
#   run(kind="nvidia-h200", carry=[".whl"], command="bash bench/run_issue13.sh memory")
#   run(kind="nvidia-h200", carry=[".whl"], command="bash bench/run_issue13.sh compile")
# both: a tiny CUDA check of swap on a pool, the 22 GiB-cap P=2 run with the auto plan, the
# compiled pool of 1 and of 8. memory: the same checks, the uncapped P=2 plan, 832x480 rows
# (POOLS_480) and the fast row (unless SKIP_FAST). compile: the in-process compiled step
# (bench_dit.py, cuDNN) and the compiled pools in the same call.
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
PM=bench/pool_memory.py

checks() {   # swap on a tiny pool (latent CRCs of swap 0 and 3), then P=2 under a 22 GiB cap
    for sw in 0 3; do
        timeout 60 python3 $PM --tiny --pools 2 --sizes 64x48 --frames 5 --swap-blocks $sw \
            --out "$OUT/tiny_swap$sw.json" 2>&1 | tail -2
    done
    timeout 170 python3 $PM --pools 2 --plan auto --cap-gib 22 --out "$OUT/cap22_p2_auto.json" \
        2>&1 | grep -v '^{' | tee "$OUT/cap22_p2_auto.md"
}

compiled() {
    timeout 330 python3 $PM --pools 1 8 --roles 0 1 --compile on --steps 3 \
        --out "$OUT/pool_compiled_720p.json" 2>&1 | grep -v '^{' | tee "$OUT/pool_compiled_720p.md"
}

case "${1:-both}" in
both)
    checks
    compiled
    ;;
memory)
    checks
    timeout 60 python3 $PM --pools 2 --roles 0 --plan auto --out "$OUT/uncapped_p2_auto.json" \
        2>&1 | grep -v '^{' | tee "$OUT/uncapped_p2_auto.md"
    timeout 170 python3 $PM --pools ${POOLS_480:-1 2 4 8} --sizes 832x480 \
        --out "$OUT/pool_memory_480p.json" 2>&1 | grep -v '^{' | tee "$OUT/pool_memory_480p.md"
    [ -n "${SKIP_FAST:-}" ] || timeout 90 python3 $PM --pools 1 --mode fast --sizes 1280x720 \
        --out "$OUT/pool_memory_fast.json" 2>&1 | grep -v '^{' | tee "$OUT/pool_memory_fast.md"
    ;;
compile)
    timeout 200 python3 bench/bench_dit.py --sizes 1280x720 --frames 77 --parts ours \
        --backends cudnn --compile --repeats 2 --out "$OUT/dit_step_compiled.json" 2>&1 | tail -15
    compiled
    ;;
esac
