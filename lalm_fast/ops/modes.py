"""How a compression kernel finds its segments.

The numbering is shared with the C++ kernels (``csrc/modes.h``); a test compares the two.
"""

from __future__ import annotations

import enum


class Mode(enum.IntEnum):
    PEAK = 0        # boundary-score peaks with a prominence threshold (param = prominence)
    THRESHOLD = 1   # boundary score above a fixed threshold (param = threshold)
    RATE = 2        # exactly ceil(L / rate) segments at the highest scores (param = rate)
    UNIFORM = 3     # windows of k frames (param = k)
    DOWNSAMPLE = 4  # the first frame of each window of k frames (param = k)
    GIVEN = 5       # the segments a caller's start mask opens
    SEGMENT_IDS = 6  # the segments of sorted per-frame ids (the segment tensor: ids [B, T])
    OFFSETS = 7     # CSR offsets (the segment tensor: offsets [B, S+1])

    @property
    def takes_segments(self) -> bool:
        """Whether compress reads the caller's segment tensor (its ``boundaries`` argument)."""
        return self in (Mode.GIVEN, Mode.SEGMENT_IDS, Mode.OFFSETS)

    @property
    def detects(self) -> bool:
        """Whether the segments come from boundary scores (and min_len / max_len apply)."""
        return self in (Mode.PEAK, Mode.THRESHOLD, Mode.RATE)
