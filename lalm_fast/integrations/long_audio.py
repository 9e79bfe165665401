"""Model-agnostic 30 s windowing: lives in :mod:`lalm_fast.long_audio` (the generic
:class:`~lalm_fast.models.AudioLM` uses it too); re-exported here."""

from lalm_fast.long_audio import (Windows, encode_windowed, join_windows, padded_samples, split_windows,
                                  windowed_token_counts, windows_per_audio)

__all__ = ["Windows", "split_windows", "join_windows", "encode_windowed", "windowed_token_counts",
           "windows_per_audio", "padded_samples"]
