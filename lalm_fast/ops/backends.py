"""Backends: which kernels run where, and what each runs natively.

A backend is a module-like object with the kernels named in :data:`CAPABILITIES`, each with
the contract written in :mod:`lalm_fast.ops.reference`:

- ``triton``: Triton kernels (``lalm_fast.kernels``), CUDA tensors; default on GPU.
- ``cuda``: the C++/CUDA fallback (``lalm_fast._C.cuda``), CUDA tensors.
- ``cpu``: the C++ CPU kernels (``lalm_fast._C.cpu``); default on CPU.
- ``torch``: the pure-PyTorch reference (``lalm_fast.ops.reference``), any device.

``backend=`` on an op, or the ``LALM_FAST_BACKEND`` environment variable, forces one; a
forced backend that cannot run raises instead of silently falling back.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Optional

import torch

from lalm_fast.ops.modes import Mode

BACKENDS = ("triton", "cuda", "cpu", "torch")
ENV_VAR = "LALM_FAST_BACKEND"
POOLING_KERNELS = ("span_mean", "span_mean_backward", "boundary_scores")  # every backend has these


@dataclass(frozen=True)
class Capabilities:
    """What a backend runs natively; the ops compose the pooling kernels for the rest."""

    device: Optional[str]  # the device type its tensors live on (None: any)
    detect: bool  # detect_boundaries(scores, lengths, mode, param, min_len, max_len), padded input
    compress_modes: frozenset  # the Modes that compress(x, lengths, mode, ...) runs in one call
    compress_rules: bool  # whether that compress honours min_len and max_len
    detect_packed: bool = False  # detect_boundaries(..., cu_seqlens, max_seqlen) on packed input too
    packed_modes: frozenset = frozenset()  # the Modes compress_packed(x, cu_seqlens, mode, ...) runs in one call
    normalize: bool = False  # boundary_scores(x, lengths, normalize=True, cu_seqlens=None, max_seqlen=0)

    @property
    def kernels(self) -> tuple[str, ...]:
        extra = ("detect_boundaries",) if self.detect else ()
        packed = ("compress_packed",) if self.packed_modes else ()
        return POOLING_KERNELS + extra + (("compress",) if self.compress_modes else ()) + packed


CAPABILITIES = {
    "triton": Capabilities("cuda", detect=True, compress_modes=frozenset(Mode), compress_rules=True,
                           detect_packed=True, packed_modes=frozenset(Mode) - {Mode.SEGMENT_IDS, Mode.OFFSETS},
                           normalize=True),
    # The cuda and cpu detection and span building are one torch-free C++ header
    # (csrc/detection.h): one GPU thread per row (per token for windows, ids and offsets)
    # runs the code the CPU tests check.
    "cuda": Capabilities("cuda", detect=True, compress_modes=frozenset(Mode), compress_rules=True),
    "cpu": Capabilities("cpu", detect=True, compress_modes=frozenset(Mode), compress_rules=True),
    "torch": Capabilities(None, detect=False, compress_modes=frozenset(), compress_rules=False),
}
_AUTO_ORDER = {"cuda": ("triton", "cuda", "torch"), "cpu": ("cpu", "torch")}


def _import_triton() -> Any:
    return importlib.import_module("lalm_fast.kernels")


def _import_compiled(name: str) -> Callable[[], Any]:
    def load():
        try:
            module = importlib.import_module("lalm_fast._C")
        except ImportError as exc:
            return SimpleNamespace(UNAVAILABLE_REASON=f"the C++ extension lalm_fast._C is not built ({exc}); "
                                                      "`pip install --no-build-isolation .` builds it")
        if not hasattr(module, name):
            return SimpleNamespace(UNAVAILABLE_REASON="lalm_fast._C was built without CUDA kernels (needs a CUDA "
                                                      "toolkit and a CUDA build of torch, or FORCE_CUDA=1)")
        return getattr(module, name)

    return load


_IMPORTERS = {
    "triton": _import_triton,
    "cuda": _import_compiled("cuda"),
    "cpu": _import_compiled("cpu"),
    "torch": lambda: importlib.import_module("lalm_fast.ops.reference"),
}
# A plain dict cache (not lru_cache): torch.compile, tracing into kernels() after resolve()
# has loaded a backend, then sees a dictionary lookup and no import machinery.
_LOADED: dict[str, tuple[Any, str]] = {}


def _load(name: str) -> tuple[Any, str]:
    """The backend's kernels, or None and the reason it cannot run."""
    if name not in _LOADED:
        try:
            module = _IMPORTERS[name]()
            reason = getattr(module, "UNAVAILABLE_REASON", None)
            _LOADED[name] = (None, reason) if reason else (module, "")
        except Exception as exc:  # ImportError, or a toolchain error raised at import
            _LOADED[name] = (None, f"{type(exc).__name__}: {exc}")
    return _LOADED[name]


def _runs_on(name: str, device_type: str) -> bool:
    wanted_device = CAPABILITIES[name].device
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
            raise ValueError(f"backend {forced!r} runs on {CAPABILITIES[forced].device} tensors, got tensors on {device}")
        module, reason = _load(forced)
        if module is None:
            raise RuntimeError(f"backend {forced!r} was requested but cannot run here: {reason}")
        return forced
    for name in _AUTO_ORDER.get(device.type, ("torch",)):
        if _load(name)[0] is not None:
            return name
    return "torch"


def kernels(name: str) -> Any:
    """The kernels of backend ``name`` (attributes named as in :attr:`Capabilities.kernels`)."""
    module, reason = _load(name)
    if module is None:
        raise RuntimeError(f"backend {name!r} cannot run here: {reason}")
    return module


def detects(name: str, packed: bool = False) -> bool:
    """Whether backend ``name`` turns raw scores into a start mask in one kernel (padded
    input, or packed input when ``packed``)."""
    caps = CAPABILITIES[name]
    return caps.detect and (caps.detect_packed or not packed)


def compresses(name: str, mode: Mode, min_len: int = 1, max_len: int = 0) -> bool:
    """Whether backend ``name`` runs a whole ``compress`` (spans and means, and for detection
    modes scores and detection too) in one kernel for these settings (padded input)."""
    caps = CAPABILITIES[name]
    return mode in caps.compress_modes and (caps.compress_rules or (min_len <= 1 and max_len == 0))


def normalizes(name: str) -> bool:
    """Whether backend ``name``'s ``boundary_scores`` min-max normalises each sample itself."""
    return CAPABILITIES[name].normalize


def compresses_packed(name: str, mode: Mode) -> bool:
    """Whether backend ``name`` runs a whole ``compress_packed`` (spans and means, and for
    detection modes scores and detection, any ``min_len`` / ``max_len``) on packed input."""
    return mode in CAPABILITIES[name].packed_modes


def has_compress(name: str, mode: int, min_len: int = 1, max_len: int = 0) -> bool:
    """Deprecated name of :func:`compresses`."""
    warnings.warn("backends.has_compress is deprecated: use backends.compresses", DeprecationWarning, stacklevel=2)
    return compresses(name, Mode(mode), min_len, max_len)


def available() -> dict[str, str]:
    """Each backend and either 'ok' or why it cannot run (for bug reports and the CLI)."""
    return {name: ("ok" if _load(name)[0] is not None else _load(name)[1]) for name in BACKENDS}
