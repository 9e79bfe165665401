#!/usr/bin/env bash
# Kernel benchmark of the code before and after the restructure, alternated on one machine.
set -euo pipefail
cd /tmp/cmp
for round in 1 2; do
  PYTHONPATH=/work/baseline python /work/baseline/bench/kernels_cpu.py --no-compile --csv /tmp/cmp/before.csv > before_$round.txt 2>&1
  (cd /work/main && python -m lalm_fast.bench.kernels_cpu --no-compile --csv /tmp/cmp/after.csv) > after_$round.txt 2>&1
done
echo done
