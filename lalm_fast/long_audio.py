"""Long audio for fixed-window encoders, independent of any model (torch only).

Whisper-style encoders take a fixed window (30 s = 3000 mel frames). Longer audio is cut into
windows, every window is encoded and compressed on its own, and the windows' tokens are joined
back per audio, so 3x compression fits 3x more audio in the same LLM context::

    out = encode_windowed(encode, features, mel_lengths, window=3000)
    # encode(windows [W, C, 3000], window_lengths [W]) -> CompressedAudio of every window
    # out: CompressedAudio [N, S, D] with per-audio lengths; spans count frames from the audio's start

The token count of a static compressor follows without running anything::

    windowed_token_counts(mel_lengths, 3000, tokens_per_window)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from lalm_fast.ops import CompressedAudio

__all__ = ["Windows", "split_windows", "join_windows", "encode_windowed", "windowed_token_counts",
           "windows_per_audio", "padded_samples"]


@dataclass
class Windows:
    """Fixed-size windows cut from a batch of audios (only the windows that hold audio)."""

    features: torch.Tensor   # [W, ..., window]: the windows of audio 0, then of audio 1, ...
    lengths: torch.Tensor    # [W]: valid frames in each window
    per_audio: torch.Tensor  # [N]: how many windows each audio has


def windows_per_audio(lengths: torch.Tensor, window: int) -> torch.Tensor:
    """``ceil(L / window)`` windows per audio, at least one (an empty audio still gets one)."""
    return torch.clamp((lengths + window - 1) // window, min=1)


def split_windows(features: torch.Tensor, lengths: torch.Tensor, window: int) -> Windows:
    """Cut ``features [N, ..., M]`` (time last, as HF feature extractors give mel features) into
    windows of ``window`` frames; a tail shorter than a window is zero-padded."""
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    if lengths.shape != features.shape[:1]:
        raise ValueError(f"lengths must have shape [{features.shape[0]}] (one per audio), got {list(lengths.shape)}")
    total = features.shape[-1]
    if bool((lengths > total).any()):
        raise ValueError(f"lengths must be <= the feature length {total}, got max {int(lengths.max())}")
    slots = max(1, math.ceil(total / window))
    padded = F.pad(features, (0, slots * window - total))
    # [N, ..., slots * window] -> [N, slots, ..., window]
    slotted = padded.unflatten(-1, (slots, window)).movedim(-2, 1)
    starts = torch.arange(slots, device=lengths.device) * window
    per_audio = windows_per_audio(lengths, window)
    used = torch.arange(slots, device=lengths.device)[None, :] < per_audio[:, None]
    window_lengths = (lengths[:, None] - starts[None, :]).clamp(0, window)
    return Windows(slotted[used.to(features.device)], window_lengths[used], per_audio)


def join_windows(windows: CompressedAudio, per_audio: torch.Tensor,
                 frames_per_window: Optional[int] = None) -> CompressedAudio:
    """Concatenate each audio's windows' tokens (in order) into one padded row per audio.

    With ``frames_per_window`` (the compressor's input frames per window), spans are shifted so
    they count frames from the start of the audio rather than of the window.
    """
    if windows.is_packed:
        raise ValueError("join_windows expects padded CompressedAudio, got packed")
    count, device = per_audio.shape[0], windows.values.device
    owner = torch.repeat_interleave(torch.arange(count, device=device), per_audio.to(device))
    if owner.shape[0] != windows.values.shape[0]:
        raise ValueError(f"per_audio sums to {owner.shape[0]} windows but {windows.values.shape[0]} were given")
    lengths = torch.zeros(count, dtype=windows.lengths.dtype, device=device).index_add_(0, owner, windows.lengths)
    valid = windows.mask().bool()
    token_owner = owner[:, None].expand_as(valid)[valid]
    first_token = torch.cumsum(lengths, 0) - lengths
    position = torch.arange(token_owner.shape[0], device=device) - first_token[token_owner]
    width = int(lengths.max()) if count else 0  # one host sync: the joined width is data dependent

    values = windows.values.new_zeros(count, width, windows.values.shape[-1])
    values[token_owner, position] = windows.values[valid]
    spans = _joined_spans(windows.spans, valid, owner, token_owner, position, lengths, width, frames_per_window)
    return CompressedAudio(values, lengths, spans)


def _joined_spans(spans, valid, owner, token_owner, position, lengths, width, frames_per_window):
    first_window = torch.cumsum(torch.bincount(owner, minlength=lengths.shape[0]), 0)
    first_window = first_window - torch.bincount(owner, minlength=lengths.shape[0])
    window_index = torch.arange(owner.shape[0], device=owner.device) - first_window[owner]
    offset = window_index * (frames_per_window or 0)
    shifted = spans + offset[:, None, None].to(spans.dtype)
    # Unused rows hold (L, L), L = the end of the audio's last token, as CompressedAudio specifies.
    token_spans = shifted[valid]
    ends = torch.zeros(lengths.shape[0], dtype=spans.dtype, device=spans.device)
    ends = ends.scatter_reduce(0, token_owner, token_spans[:, 1], reduce="amax")
    out = ends[:, None, None].expand(lengths.shape[0], width, 2).clone()
    out[token_owner, position] = token_spans
    return out


def encode_windowed(encode: Callable[[torch.Tensor, torch.Tensor], CompressedAudio], features: torch.Tensor,
                    lengths: torch.Tensor, window: int, frames_per_window: Optional[int] = None) -> CompressedAudio:
    """Encode and compress audio of any length in ``window``-frame pieces, then join per audio.

    ``encode(window_features, window_lengths)`` runs the encoder and compressor on a batch of
    windows and returns their ``CompressedAudio``.
    """
    windows = split_windows(features, lengths, window)
    return join_windows(encode(windows.features, windows.lengths), windows.per_audio, frames_per_window)


def windowed_token_counts(lengths: torch.Tensor, window: int,
                          tokens_per_window: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Tokens per audio of ``lengths`` frames when each window gives ``tokens_per_window(window_lengths)``."""
    lengths = torch.as_tensor(lengths)
    slots = int(windows_per_audio(lengths, window).max()) if lengths.numel() else 1
    starts = torch.arange(slots, device=lengths.device) * window
    window_lengths = (lengths[:, None] - starts[None, :]).clamp(0, window)
    return tokens_per_window(window_lengths).sum(-1)


def padded_samples(longest: int, window_samples: int) -> int:
    """Waveform length to pad a batch to: whole windows, enough for the longest audio."""
    return max(1, math.ceil(longest / window_samples)) * window_samples
