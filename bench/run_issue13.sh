#!/usr/bin/env bash
# The device commands of issue 13's fourth-session round (bench/README.md, "one placement"):
#   run(kind="nvidia-h200", carry=[".whl"], command="bash bench/run_issue13.sh both")
#   run(kind="nvidia-h200", carry=[".whl"], command="bash bench/run_issue13.sh memory")
#   run(kind="nvidia-h200", carry=[".whl"], command="bash bench/run_issue13.sh compile")
#   run(kind="nvidia-h200", carry=[".whl"], command="bash bench/run_issue13.sh sixth")   # .whl with FA3
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

identity() {  # fifth session: the 22 GiB-cap auto plan (swap 32) against the uncapped plan (swap 0)
    timeout 170 python3 $PM --pools 2 --roles 0 --plan auto --cap-gib 22 --vae whole --out "$OUT/cap22_p2_auto.json" \
        2>&1 | grep -v '^{' | tee "$OUT/cap22_p2_auto.md"
    timeout 120 python3 $PM --pools 2 --roles 0 --plan auto --vae whole --out "$OUT/uncapped_p2_auto.json" \
        2>&1 | grep -v '^{' | tee "$OUT/uncapped_p2_auto.md"
    python3 -c "import json,sys; a,b=(json.load(open(f))[0].get('latent_crc32') for f in sys.argv[1:]); \
print('latent CRC capped', a, 'uncapped', b, 'EQUAL' if a==b and a is not None else 'DIFFER')" \
        "$OUT/cap22_p2_auto.json" "$OUT/uncapped_p2_auto.json"
}

profiled() {  # compiled pool of 1 and rank 0 / 1 of 8, the last step's GPU time by kernel
    timeout 330 python3 $PM --pools 1 8 --roles 0 1 --compile on --steps 3 --profile \
        --out "$OUT/pool_compiled_720p.json" 2>&1 | grep -v '^{' | tee "$OUT/pool_compiled_720p.md"
}

sixth() {  # sixth session: FA3 carried; the in-process compiled step (exact/fast rows) and the
           # compiled pools in the same call; step compute with the fake collectives as no-ops
    python3 -c "import flash_attn_interface as f; print('FA3', f.__file__)" || echo "FA3 MISSING"
    timeout 250 python3 bench/bench_dit.py --sizes 1280x720,832x480 --frames 77 --parts ours \
        --backends fa3 --fast fa3_fp8 --compile --repeats 2 --warmup-blocks 0 --deadline 225 \
        --out "$OUT/dit_step_compiled.json" 2>&1 | tail -9
    timeout 90 python3 $PM --pools 1 --roles 0 --compile on --steps 3 --collectives noop \
        --out "$OUT/pool1_compiled_fa3.json" 2>&1 | tee "$OUT/pool1_compiled_fa3.log" | grep "^| 1 "
    timeout 130 python3 $PM --pools 8 --roles 0 1 --compile on --steps 3 --collectives noop \
        --out "$OUT/pool8_compiled_fa3.json" 2>&1 | tee "$OUT/pool8_compiled_fa3.log" | grep "^| 8 "
    timeout 70 python3 $PM --pools 8 --roles 0 --compile on --steps 3 --collectives fill \
        --out "$OUT/pool8_compiled_fa3_fill.json" 2>&1 | tee "$OUT/pool8_compiled_fa3_fill.log" | grep "^| 8 "
}

profile8() {  # rank 0 of 8, compiled FA3, noop collectives, last step by kernel
    timeout 160 python3 $PM --pools 8 --roles 0 1 --compile on --steps 3 --collectives noop --profile \
        --out "$OUT/pool8_profile_fa3.json" 2>&1 | tee "$OUT/pool8_profile_fa3.log" | grep "^| 8 "
}

ratio() {  # pool of one and rank 0 / 1 of 8 in one call, compiled, noop collectives
    timeout 140 python3 $PM --pools 1 --roles 0 --compile on --steps 3 --collectives noop \
        --out "$OUT/pool1_compiled_fa3.json" 2>&1 | tee "$OUT/pool1_compiled_fa3.log" | grep "^| 1 "
    timeout 130 python3 $PM --pools 8 --roles 0 1 --compile on --steps 3 --collectives noop \
        --out "$OUT/pool8_compiled_fa3.json" 2>&1 | tee "$OUT/pool8_compiled_fa3.log" | grep "^| 8 "
}

case "${1:-both}" in
ratio)
    ratio
    ;;
profile8)
    profile8
    timeout 90 python3 $PM --pools 1 --roles 0 --compile on --steps 3 --collectives noop \
        --out "$OUT/pool1_compiled_fa3.json" 2>&1 | tee "$OUT/pool1_compiled_fa3.log" | grep "^| 1 "
    timeout 130 python3 $PM --pools 8 --roles 0 1 --compile on --steps 3 --collectives noop \
        --out "$OUT/pool8_compiled_fa3.json" 2>&1 | tee "$OUT/pool8_compiled_fa3.log" | grep "^| 8 "
    ;;
sixth)
    sixth
    ;;
fifth)
    identity
    profiled
    ;;
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
