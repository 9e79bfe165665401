"""Checks of the ops' scalar arguments, shared with the layers in :mod:`lalm_fast.nn` so a
layer rejects a bad setting when it is built rather than on its first batch."""

from __future__ import annotations

import math
from typing import Optional

from lalm_fast.ops.modes import Mode

DEFAULT_PROMINENCE = 0.05  # SCPC / UnsupSeg's tuned range is 0..0.14


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


MAX_ROWS = 2**31 - 1  # output rows per sample: far above any real T; a larger bound only fails to allocate


def check_max_segments(value, grid) -> int:
    """``max_segments`` for a grid: packed input needs a row for every sample."""
    value = check_positive_int(value, "max_segments")
    if value > MAX_ROWS:
        raise ValueError(f"max_segments must be <= {MAX_ROWS} (rows past T={grid.num_frames} hold no token), got {value}")
    if grid.packed and value < grid.num_samples:
        raise ValueError(f"max_segments ({value}) must be >= the number of packed samples ({grid.num_samples}): "
                         "every sample needs a token")
    return value


def check_detection_args(prominence=None, rate=None, threshold=None, min_len: int = 1,
                         max_len: Optional[int] = None) -> None:
    """Raise the error :func:`lalm_fast.ops.detect_boundaries` would raise for these settings."""
    modes = [name for name, value in (("prominence", prominence), ("rate", rate), ("threshold", threshold))
             if value is not None]
    if len(modes) > 1:
        raise ValueError(f"choose one detection mode, got {' and '.join(modes)}")
    for name, value in (("prominence", prominence), ("rate", rate), ("threshold", threshold)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if rate is not None and not 1 <= rate < math.inf:
        raise ValueError(f"rate must be >= 1 and finite (frames per output token), got {rate}")
    if prominence is not None and not prominence >= 0:
        raise ValueError(f"prominence must be >= 0, got {prominence}")
    if threshold is not None and threshold != threshold:  # NaN; math.isnan rejects torch.compile's SymFloat
        raise ValueError("threshold must not be NaN")
    check_positive_int(min_len, "min_len")
    if max_len is not None:
        check_positive_int(max_len, "max_len")
        if max_len < min_len:
            raise ValueError(f"max_len ({max_len}) must be >= min_len ({min_len})")
        if rate is not None:
            raise ValueError("max_len cannot be combined with rate: rate fixes the token count exactly")


def detection_mode(prominence=None, rate=None, threshold=None) -> tuple[Mode, float]:
    """The kernels' ``(mode, param)`` for checked detection settings (peak mode by default)."""
    if rate is not None:
        return Mode.RATE, float(rate)
    if threshold is not None:
        return Mode.THRESHOLD, float(threshold)
    return Mode.PEAK, float(DEFAULT_PROMINENCE if prominence is None else prominence)
