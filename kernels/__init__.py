"""The ``triton`` backend of lalm_fast (installed as ``lalm_fast.kernels``).

The backend kernels with the contracts of :mod:`lalm_fast.ops.reference`, one file each:
``span_mean`` / ``span_mean_backward`` (span_mean.py), ``boundary_scores``
(boundary_scores.py), ``detect_boundaries`` (detect_boundaries.py: every detection mode,
padded or packed) and ``compress`` (compress.py: spans and means in every mode, in one to
three launches, as the capability table in :mod:`lalm_fast.ops.backends` lists). They are plain
launchers: ``lalm_fast.ops.kernel_ops`` registers every backend's kernels as the same
``torch.library`` ops, on a GPU and under ``TRITON_INTERPRET=1`` alike.

``UNAVAILABLE_REASON`` is None when the backend can run (triton importable and a CUDA
device present, or ``TRITON_INTERPRET=1``), else a string; the module always imports.
Environment: ``LALM_FAST_TRITON_FIXED_CONFIG=1`` replaces autotuning by fixed
configurations (always on under ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

from ._common import FIXED_CONFIG_ENV, IMPORT_ERROR, fixed_config, interpreting, unavailable_reason

UNAVAILABLE_REASON = unavailable_reason()

__all__ = [
    "UNAVAILABLE_REASON", "FIXED_CONFIG_ENV", "fixed_config", "interpreting",
    "span_mean", "span_mean_backward", "boundary_scores", "detect_boundaries", "compress",
    "compress_packed",
]

if IMPORT_ERROR is None:
    try:
        from .boundary_scores import boundary_scores
        from .compress import compress, compress_packed
        from .detect_boundaries import detect_boundaries
        from .span_mean import span_mean, span_mean_backward
    except Exception as exc:  # a triton too old / too new for these kernels
        UNAVAILABLE_REASON = IMPORT_ERROR = f"the triton kernels failed to load ({type(exc).__name__}: {exc})"

if IMPORT_ERROR is not None:

    def _unavailable(*args, **kwargs):
        raise RuntimeError(f"the triton backend cannot run here: {UNAVAILABLE_REASON}")

    span_mean = span_mean_backward = boundary_scores = detect_boundaries = compress = _unavailable
    compress_packed = _unavailable
