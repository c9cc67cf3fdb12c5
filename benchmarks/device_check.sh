#!/usr/bin/env bash
# The checks that need a GPU, in one pass sized for a short lease: the CUDA tests, the
# speed benchmark, the many-task benchmark, then the whole suite on CUDA (estimators
# train on device="auto", SKILLFIT_TEST_DEVICE=auto) with what time is left.
#
# Usage: bash benchmarks/device_check.sh OUTDIR [SECONDS]
# Extra arguments for the benchmarks go in SPEED_ARGS and MANY_ARGS, their time limits
# in SPEED_TIMEOUT and MANY_TIMEOUT (seconds, default 170 each; SPEED_TIMEOUT=0 skips speed.py);
# SCALING_TIMEOUT > 0 also runs scaling.py (needs skillfit[dask]; n_devices=2 needs two GPUs).
set -u
out=${1:?usage: device_check.sh OUTDIR [SECONDS]}
budget=${2:-540}
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$out"
{
    python -c "import torch, transformers, sklearn; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU', '| transformers', transformers.__version__, '| scikit-learn', sklearn.__version__)"
    python -c "import peft; print('peft', peft.__version__)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

echo "== CUDA tests ($(left)s left)"
timeout 60 python -m pytest -q -p no:cacheprovider -k "cuda or syncs_with_the_device" tests/ >"$out/cuda-tests.log" 2>&1
tail -3 "$out/cuda-tests.log"

echo "== many_tasks.py ($(left)s left)"
timeout "${MANY_TIMEOUT:-170}" python benchmarks/many_tasks.py --output "$out/many-tasks-cuda.md" ${MANY_ARGS:-} >"$out/bench.log" 2>&1
echo "many_tasks.py exit $?"

if [ "${SPEED_TIMEOUT:-170}" -gt 0 ]; then
    echo "== speed.py ($(left)s left)"
    timeout "${SPEED_TIMEOUT:-170}" python benchmarks/speed.py --output "$out/speed-cuda.md" ${SPEED_ARGS:-} >>"$out/bench.log" 2>&1
    echo "speed.py exit $?"
fi

if [ "${SCALING_TIMEOUT:-0}" -gt 0 ]; then
    echo "== scaling.py ($(left)s left)"
    timeout "$SCALING_TIMEOUT" python benchmarks/scaling.py --output "$out/scaling-cuda.md" ${SCALING_ARGS:-} >>"$out/bench.log" 2>&1
    echo "scaling.py exit $?"
fi

suite=$(($(left) - 15))
echo "== whole suite on CUDA (${suite}s)"
parallel=""
python -c "import xdist" 2>/dev/null && parallel="-n 14"
SKILLFIT_TEST_DEVICE=auto timeout "$suite" python -m pytest -p no:cacheprovider $parallel -v --tb=line -o addopts="-rfE --strict-markers" tests/ >"$out/suite.log" 2>&1
echo "suite exit $?"
tail -5 "$out/suite.log"
