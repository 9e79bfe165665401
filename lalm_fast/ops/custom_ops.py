"""Deprecated alias: the kernel ops are :mod:`lalm_fast.ops.kernel_ops`, the modes
:class:`lalm_fast.ops.Mode`."""

import warnings

from lalm_fast.ops.kernel_ops import _span_mean_backward_op as span_mean_backward  # noqa: F401
from lalm_fast.ops.kernel_ops import boundary_scores, compress, span_mean  # noqa: F401
from lalm_fast.ops.kernel_ops import detect_boundaries as detect_starts  # noqa: F401
from lalm_fast.ops.modes import Mode

warnings.warn("lalm_fast.ops.custom_ops is deprecated: use lalm_fast.ops.kernel_ops and lalm_fast.ops.Mode",
              DeprecationWarning, stacklevel=2)

MODES = {mode.name.lower(): int(mode) for mode in Mode}
