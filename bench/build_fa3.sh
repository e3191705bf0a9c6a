#!/usr/bin/env bash
# Build the FlashAttention-3 wheel this pack uses on Hopper (H100/H200): only the kernels the
# Wan DiT calls (forward, head dim 128, bf16 + fp8 e4m3, no varlen/paged/split/softcap), which
# takes about 2 minutes on 2 CPU cores instead of hours for the full package.
#
#   bash bench/build_fa3.sh /path/to/flash-attention [python]
#
# Needs: a checkout of Dao-AILab/flash-attention with csrc/cutlass (git submodule update --init
# csrc/cutlass), CUDA >= 12.3 nvcc (CUDA_HOME), and a python whose torch (>= 2.9) is the one
# ComfyUI runs (the wheel uses torch's stable ABI, so it keeps working across torch updates).
# Writes hopper/dist/flash_attn_3-*.whl; install it with `python -m pip install <wheel>`.
set -euo pipefail
SRC="${1:?usage: build_fa3.sh FLASH_ATTENTION_CHECKOUT [PYTHON]}"
PY="${2:-python3}"
[ -f "$SRC/hopper/setup.py" ] || { echo "no hopper/setup.py in $SRC: give a flash-attention checkout"; exit 2; }
[ -d "$SRC/csrc/cutlass/include" ] || { echo "no csrc/cutlass in $SRC: run git submodule update --init csrc/cutlass"; exit 2; }
export FLASH_ATTENTION_FORCE_BUILD=TRUE CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}" NVCC_THREADS="${NVCC_THREADS:-1}"
for f in BACKWARD SPLIT PAGEDKV APPENDKV LOCAL SOFTCAP PACKGQA FP16 VARLEN SM80 \
         HDIM64 HDIM96 HDIM192 HDIM256 HDIMDIFF64 HDIMDIFF192; do
    export "FLASH_ATTENTION_DISABLE_$f=TRUE"
done
cd "$SRC/hopper"
[ -f ../README.md ] || echo "FlashAttention" > ../README.md     # setup.py reads it
"$PY" setup.py bdist_wheel
ls -l dist/*.whl
