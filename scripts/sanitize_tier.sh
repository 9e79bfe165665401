#!/usr/bin/env bash
# The sanitizer tier: the C++ CPU kernels built with AddressSanitizer and UBSan, under the C++
# op tests and the C++ fuzz test (pytest marker `sanitize`, listed in tests/conftest.py).
#   bash scripts/sanitize_tier.sh [PYTEST_ARGS...]
# 1. builds the CPU extension with -fsanitize=address,undefined into build/sanitize/
#    (LALM_FAST_SANITIZE=1 python setup.py build_ext; incremental; the normal in-place build
#    is untouched),
# 2. runs `pytest -m "sanitize and not slow"` with that extension loaded as lalm_fast._C
#    (LALM_FAST_EXTENSION, read by tests/conftest.py), libasan preloaded (python and torch are
#    not instrumented, and ASan's runtime must come first; libstdc++ next), leak detection off (the
#    interpreter's own allocations would flood it), UBSan stopping at its first report, and the
#    Triton interpreter off (it runs no C++). Any report fails the run.
# Environment: PYTHON (default python), CC (the compiler that built the extension, default gcc).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LALM_FAST_SANITIZE=1 "$PY" setup.py -q build_ext >/dev/null
so=$(ls "$PWD"/build/sanitize/lalm_fast/_C*.so)
libasan=$("${CC:-gcc}" -print-file-name=libasan.so)
if [[ ! -e $libasan ]]; then
    echo "libasan.so not found (${CC:-gcc} -print-file-name=libasan.so): install the compiler's libasan" >&2
    exit 1
fi
# libstdc++ right after it: ASan resolves the real __cxa_throw at start-up, so a C++ exception
# (every TORCH_CHECK) would otherwise abort in its interceptor.
libstdcxx=$("${CC:-gcc}" -print-file-name=libstdc++.so)
export LD_PRELOAD="$libasan $libstdcxx"
export ASAN_OPTIONS=detect_leaks=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LALM_FAST_EXTENSION=$so TRITON_INTERPRET=0
exec "$PY" -m pytest -m "sanitize and not slow" -p no:cacheprovider -q --capture=sys "$@"
