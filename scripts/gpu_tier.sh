#!/usr/bin/env bash
# The GPU tier in one command, on a machine with a CUDA GPU:
#   bash scripts/gpu_tier.sh [RESULTS_DIR]
# 1. installs lalm-fast with its CUDA extension (scripts/setup.sh; with OFFLINE=1 only
#    `pip install --no-deps`, for machines without a package index that already have torch
#    and triton),
# 2. runs the gpu tests (compiled Triton and the CUDA fallback against the reference, CUDA
#    graphs, torch.compile; tests/test_gpu_detection.py: the CUDA fallback's detection and
#    compress),
# 3. runs the GPU kernel benchmark, appending rows to RESULTS_DIR/bench_gpu.csv
#    (default bench/results).
# Each step runs even if an earlier one failed; the exit status is the first failure's.
# Environment: PYTHON (default python), STEP_TIMEOUT (seconds per step, default 3600), OFFLINE.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-bench/results}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
# each step is cut after STEP_TIMEOUT seconds, so a hang in one cannot starve the others
STEP_TIMEOUT=${STEP_TIMEOUT:-3600}
status=0
step() { echo "== $(date -u +%H:%M:%S) $*"; timeout "$STEP_TIMEOUT" "$@" || { rc=$?; echo "== step failed (rc=$rc): $*"; [[ $status == 0 ]] && status=$rc; }; }

if [[ "${OFFLINE:-0}" == "1" ]]; then
    step "$PY" -m pip install -q --no-build-isolation --no-deps -e .
else
    step bash scripts/setup.sh
fi
step "$PY" -c "import lalm_fast.ops as o; print(o.backends.available())"
# Only the gpu test modules: the other modules' imports (jiwer, soundfile, ...) are not needed here.
step "$PY" -m pytest tests/test_gpu.py tests/test_gpu_detection.py -m gpu -q -p no:cacheprovider -rfEs --durations=10
step "$PY" -m lalm_fast.bench.bench_gpu --out "$results/bench_gpu.csv"
echo "== $(date -u +%H:%M:%S) done (status $status)"
exit $status
