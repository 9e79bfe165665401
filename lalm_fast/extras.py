"""Optional dependencies: the pip extras, which command needs which, and the one-line message
a command prints when one of them is missing.

setup.py reads :data:`EXTRAS` from this file (by path, without importing lalm_fast), so the
extras declared to pip and the advice the CLI gives cannot drift apart. Needs only the standard
library.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Iterable, Optional

_HF = ["transformers>=5.0", "peft>=0.17", "safetensors"]
# lalm_fast.data and lalm_fast.evaluate: audio files, features, caches, WER / BLEU.
_DATA = ["soundfile>=0.12", "scipy", "safetensors", "transformers>=5.0", "jiwer>=4.0", "sacrebleu>=2.4", "tqdm"]
_TRAIN = _DATA + _HF + ["accelerate>=1.0"]
_DEMO = _TRAIN + ["matplotlib"]

EXTRAS: dict[str, list[str]] = {
    "triton": ["triton"],                       # the GPU backend (lalm_fast.kernels)
    "hf": _HF,                                  # lalm_fast.integrations, lalm_fast.models
    "data": _DATA,
    "train": _TRAIN + ["pyyaml"],               # `train` and `eval`; pyyaml only for YAML configs
    "demo": _DEMO,                              # `demo` and `reproduce`
    "bench": _HF + ["matplotlib", "psutil"],    # `bench e2e` and the plots of every suite
    "test": ["pytest", "pytest-benchmark", "hypothesis", "scipy", "ninja"],
}
EXTRAS = {name: sorted(set(requirements)) for name, requirements in EXTRAS.items()}
EXTRAS["all"] = sorted({r for requirements in EXTRAS.values() for r in requirements})

# The extra each command needs (None: the core install is enough). A `bench` suite is "bench SUITE".
COMMAND_EXTRAS: dict[str, Optional[str]] = {
    "demo": "demo", "reproduce": "demo", "train": "train", "eval": "train", "info": None,
    "bench kernels": None, "bench kernels-cpu": None, "bench kernels-gpu": "triton", "bench e2e": "bench",
}
# Modules whose import name differs from their distribution's name.
_MODULE_OF = {"pyyaml": "yaml", "pytest-benchmark": "pytest_benchmark"}
# Modules only some runs of a command import (YAML configs, a fallback memory meter, the GPU
# benchmark on a GPU): not demanded before the command starts, named if an import fails.
_SOMETIMES = {"yaml", "psutil", "triton"}


def module_of(requirement: str) -> str:
    name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()
    return _MODULE_OF.get(name, name.replace("-", "_"))


def extra_for(command: str, module: str) -> Optional[str]:
    """The extra that installs ``module`` for ``command``: the command's own extra when it holds the
    module, else the smallest extra that does; None for a module no extra installs."""
    own = COMMAND_EXTRAS.get(command)
    if own and any(module_of(r) == module for r in EXTRAS[own]):
        return own
    holding = [name for name, reqs in EXTRAS.items() if name != "all" and any(module_of(r) == module for r in reqs)]
    return min(holding, key=lambda name: len(EXTRAS[name])) if holding else None


def missing_modules(command: str) -> list[str]:
    """The modules of the command's extra that cannot be imported here (without importing them)."""
    extra = COMMAND_EXTRAS.get(command)
    modules = [module_of(r) for r in EXTRAS[extra]] if extra else []
    return [m for m in dict.fromkeys(modules) if m not in _SOMETIMES and not _importable(m)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or sys.modules[module] = None
        return False


def message(command: str, modules: Iterable[str]) -> Optional[str]:
    """``lalm-fast CMD needs a, b: pip install "lalm-fast[EXTRA]"``, or None if no extra has them."""
    modules = list(dict.fromkeys(modules))
    extras = {extra_for(command, m) for m in modules}
    if not modules or None in extras:
        return None
    install = " ".join(f'"lalm-fast[{extra}]"' for extra in sorted(extras))
    return f"lalm-fast {command} needs {', '.join(modules)}: pip install {install}"
