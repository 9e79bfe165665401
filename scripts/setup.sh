#!/usr/bin/env bash
# Install lalm-fast and its dependencies into the current Python environment.
# The C++ extension builds against the installed torch, hence --no-build-isolation.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-dev.txt
python -m pip install -q --no-build-isolation -e .
python -c "import lalm_fast.ops as o; print('lalm-fast installed; backends:', o.backends.available())"
