"""The ``triton`` backend of lalm_fast (installed as ``lalm_fast.kernels``).

Implements the three backend kernels with the contracts of
:mod:`lalm_fast.ops.reference` (``span_mean``, ``span_mean_backward``,
``boundary_scores``) plus:

- ``span_mean_op`` / ``span_mean_backward_op`` / ``boundary_scores_op``: the same
  computations registered with ``torch.library.triton_op`` (``lalm_fast::triton_*``) and
  launched through ``wrap_triton``, so ``torch.compile`` traces into the kernels;
  ``span_mean_op`` has an autograd formula (backward through
  ``lalm_fast::triton_span_mean_backward``).
- ``threshold_segment_mean``: fused boundary detection by threshold + segment means.

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
    "span_mean", "span_mean_backward", "boundary_scores", "threshold_segment_mean",
    "span_mean_op", "span_mean_backward_op", "boundary_scores_op", "threshold_segment_mean_op",
]

if IMPORT_ERROR is None:
    try:
        from .boundary import boundary_scores, boundary_scores_op
        from .segment import threshold_segment_mean, threshold_segment_mean_op
        from .span_pool import span_mean, span_mean_backward, span_mean_backward_op, span_mean_op
    except Exception as exc:  # a triton too old / too new for these kernels
        UNAVAILABLE_REASON = f"the triton kernels failed to load ({type(exc).__name__}: {exc})"
        IMPORT_ERROR = UNAVAILABLE_REASON

if IMPORT_ERROR is not None:

    def _unavailable(*args, **kwargs):
        raise RuntimeError(f"the triton backend cannot run here: {UNAVAILABLE_REASON}")

    span_mean = span_mean_backward = boundary_scores = threshold_segment_mean = _unavailable
    span_mean_op = span_mean_backward_op = boundary_scores_op = threshold_segment_mean_op = _unavailable
