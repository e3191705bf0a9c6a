# Sourced by the bench/run_*.sh device commands: repository root as the working folder, $OUT,
# unbuffered Python, and the wheels carried in .whl/ (FA3, cuDNN frontend, ftfy) installed into
# /tmp/site for this process tree.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
OUT="${OUT:-/tmp/bench_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" || exit 1
fi
