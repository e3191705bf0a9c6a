#!/usr/bin/env bash
# The device command of issue 14 (bench/README.md, "VAE across the pool"):
#   run(kind="nvidia-h200", command="bash bench/run_issue14.sh vae")
#   run(kind="nvidia-h200", carry=[".whl"], command="bash bench/run_issue14.sh pool")  # .whl: ftfy, wcwidth
# vae: whole / banded / split (fake process group, rank 0 and 1 of P = 1, 2, 4, 8) encode and
# decode of 77 frames at 1280x720 and 832x480, fp32.
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
case "${1:-vae}" in
    vae) timeout 540 python3 bench/vae_split.py --sizes 1280x720 832x480 --frames 77 \
            --pools 1 2 4 8 --roles 0 1 --bands 2 4 8 --out "$OUT/vae_split.json" 2>&1 \
            | grep -v "^{" | tee "$OUT/vae_split.md" ;;
    pool) for v in split whole; do   # the pool's real job path, rank 0 and 1, VAE split / whole
            timeout 280 python3 bench/pool_memory.py --pools 1 2 4 8 --roles 0 1 --steps 2 --vae $v \
                --compile off --out "$OUT/pool_memory_vae_$v.json" 2>&1 | grep -v '^{' \
                | tee "$OUT/pool_memory_vae_$v.md"; done ;;
    *) echo "unknown mode $1"; exit 2 ;;
esac
