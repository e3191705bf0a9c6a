#!/usr/bin/env bash
# The device command of issue 13's measurements (bench/README.md, "Memory per rank of a pool"):
#   run(kind="nvidia-h200", carry=[".whl"], command="bash bench/run_pool_memory.sh")
# .whl/ carries ftfy, wcwidth, opencv-python-headless and pytest for the device's Python.
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
python3 -c "import torch, cv2, ftfy; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
timeout 170 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_placement.py \
    tests/models/test_offload.py -k "cuda or parked_encoder" 2>&1 | tail -30
timeout 330 python3 bench/pool_memory.py --pools 1 2 4 8 --sizes 1280x720 --frames 77 --steps 2 \
    --out "$OUT/pool_memory_720p.json" 2>&1 | grep -v '^{' | tee "$OUT/pool_memory_720p.md"
timeout 60 python3 bench/pool_memory.py --pools 2 --roles 0 --encoders gpu --frames 77 --steps 2 \
    --out "$OUT/pool_memory_720p_resident.json" 2>&1 | grep -v '^{' | tee "$OUT/pool_memory_720p_resident.md"
