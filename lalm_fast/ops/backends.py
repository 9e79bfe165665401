"""Backend selection (design section 5).

A backend is a module with three kernels, ``span_mean``, ``span_mean_backward`` and
``boundary_scores``, with the contracts written in :mod:`lalm_fast.ops.reference`.

- ``triton``: fused Triton kernels (``lalm_fast.kernels``), CUDA tensors; default on GPU.
- ``cuda``: the C++/CUDA fallback in ``lalm_fast._C``, CUDA tensors.
- ``cpu``: the C++ CPU kernels in ``lalm_fast._C``; default on CPU.
- ``torch``: the pure-PyTorch reference, any device; the last resort.

``backend=`` on an op, or the ``LALM_FAST_BACKEND`` environment variable, forces one; a
forced backend that cannot run raises instead of silently falling back.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Optional

import torch

BACKENDS = ("triton", "cuda", "cpu", "torch")
ENV_VAR = "LALM_FAST_BACKEND"

# Module that implements each backend, and the device type its tensors must live on
# (None: any device).
_MODULES = {
    "triton": ("lalm_fast.kernels", "cuda"),
    "cuda": ("lalm_fast.ops._cuda_backend", "cuda"),
    "cpu": ("lalm_fast.ops._cpu_backend", "cpu"),
    "torch": ("lalm_fast.ops.reference", None),
}
_AUTO_ORDER = {"cuda": ("triton", "cuda", "torch"), "cpu": ("cpu", "torch")}


_LOADED: dict[str, tuple[Optional[ModuleType], str]] = {}


def _load(name: str) -> tuple[Optional[ModuleType], str]:
    """Import a backend module once; return it, or None and the reason it is unusable.

    A plain dict cache (not lru_cache) so that torch.compile, which traces into this after
    :func:`resolve` has loaded the module, sees a dictionary lookup and no import machinery.
    """
    if name not in _LOADED:
        try:
            module = importlib.import_module(_MODULES[name][0])
            reason = getattr(module, "UNAVAILABLE_REASON", None)
            _LOADED[name] = (None, reason) if reason else (module, "")
        except Exception as exc:  # ImportError, or a toolchain error raised at import
            _LOADED[name] = (None, f"{type(exc).__name__}: {exc}")
    return _LOADED[name]


def _runs_on(name: str, device_type: str) -> bool:
    wanted_device = _MODULES[name][1]
    # The Triton interpreter runs the same kernels on CPU tensors (tests, debugging).
    interpreted = name == "triton" and device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"
    return wanted_device is None or wanted_device == device_type or interpreted


def is_available(name: str, device_type: str = "cpu") -> bool:
    return _runs_on(name, device_type) and _load(name)[0] is not None


@torch.compiler.assume_constant_result
def resolve(requested: Optional[str], device: torch.device) -> str:
    """Name of the backend to run on ``device``: the forced one, or the best available."""
    forced = requested if requested is not None else os.environ.get(ENV_VAR) or None
    if forced is not None:
        if forced not in BACKENDS:
            source = "backend" if requested is not None else ENV_VAR
            raise ValueError(f"{source} must be one of {BACKENDS} or unset, got {forced!r}")
        if not _runs_on(forced, device.type):
            raise ValueError(f"backend {forced!r} runs on {_MODULES[forced][1]} tensors, got tensors on {device}")
        module, reason = _load(forced)
        if module is None:
            raise RuntimeError(f"backend {forced!r} was requested but cannot run here: {reason}")
        return forced
    for name in _AUTO_ORDER.get(device.type, ("torch",)):
        if _load(name)[0] is not None:
            return name
    return "torch"


def kernels(name: str) -> ModuleType:
    module, reason = _load(name)
    if module is None:
        raise RuntimeError(f"backend {name!r} cannot run here: {reason}")
    return module


def has_compress(name: str, mode: int, min_len: int = 1, max_len: int = 0) -> bool:
    """Whether backend ``name`` runs a whole ``compress`` (scores, detection, spans, means)
    in one call for this detection mode (``custom_ops.MODES``). A backend module offers
    ``compress`` and, when it covers only some modes, ``supports_compress(mode, min_len,
    max_len)``; otherwise the ops compose its three kernels."""
    module = kernels(name)
    if not hasattr(module, "compress"):
        return False
    supports = getattr(module, "supports_compress", None)
    return supports is None or bool(supports(mode, min_len, max_len))


def available() -> dict[str, str]:
    """Each backend and either 'ok' or why it cannot run (for bug reports and the CLI)."""
    return {name: ("ok" if _load(name)[0] is not None else _load(name)[1]) for name in BACKENDS}
