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
- ``compress`` / ``supports_compress``: the backend hook that ``lalm_fast.ops.segment_compress``
  uses for the fused path (threshold mode without ``min_len`` / ``max_len``); the other
  modes compose ``boundary_scores``, the shared detection code and ``span_mean``.

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
    "compress", "supports_compress",
]

THRESHOLD_MODE = 1  # lalm_fast.ops.custom_ops.MODES["threshold"] (not imported: no cycle)


def supports_compress(mode: int, min_len: int, max_len: int) -> bool:
    """The fused kernel covers threshold detection with no ``min_len`` / ``max_len`` rules."""
    return mode == THRESHOLD_MODE and min_len <= 1 and max_len == 0


def compress(x, lengths, mode, param, min_len, max_len, num_out, boundaries=None):
    """``(values, starts, ends, counts)`` of threshold segmentation in one fused call."""
    if not supports_compress(mode, min_len, max_len) or boundaries is not None:
        raise ValueError(f"the triton compress covers threshold mode only (mode={mode}, min_len={min_len}, "
                         f"max_len={max_len})")
    return threshold_segment_mean(x, lengths, float(param), int(num_out))

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
