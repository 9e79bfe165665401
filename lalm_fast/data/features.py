"""Whisper log-mel features (transformers' WhisperFeatureExtractor, built locally) and the
number of valid encoder frames per clip."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import torch

SAMPLE_RATE = 16000
HOP_LENGTH = 160  # 10 ms: 100 mel frames/s; Whisper's stride-2 conv2 makes 50 encoder frames/s


@functools.lru_cache(maxsize=8)
def whisper_feature_extractor(feature_size: int = 80, sampling_rate: int = SAMPLE_RATE):
    """A WhisperFeatureExtractor from explicit arguments (no hub download). feature_size is 80
    for Whisper up to large-v2, 128 for large-v3."""
    if feature_size not in (80, 128):
        raise ValueError(f"feature_size must be 80 or 128 (Whisper's mel bins), got {feature_size}")
    from transformers import WhisperFeatureExtractor  # heavy import, only when features are made

    return WhisperFeatureExtractor(feature_size=feature_size, sampling_rate=sampling_rate,
                                   hop_length=HOP_LENGTH, n_fft=400, padding_value=0.0)


def encoder_frames(mel_frames: torch.Tensor) -> torch.Tensor:
    """Encoder frames for a number of valid mel frames: conv2 (kernel 3, stride 2, padding 1)
    gives ceil(mel / 2)."""
    return (mel_frames + 1) // 2


def log_mel(audio_batch: Sequence[np.ndarray], window_seconds: float = 30.0, feature_size: int = 80,
            sampling_rate: int = SAMPLE_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper log-mel features of 16 kHz mono clips, each zero-padded to ``window_seconds``.

    Returns ``features [B, feature_size, window_seconds * 100]`` (float32) and
    ``valid_frames [B]`` (int64), the encoder frames that hold audio (50 per second): slice the
    encoder's output to them before compressing. A clip longer than the window raises instead
    of being cut, as the feature extractor would do silently.
    """
    window_samples = round(window_seconds * sampling_rate)
    for index, audio in enumerate(audio_batch):
        if len(audio) > window_samples:
            raise ValueError(f"audio_batch[{index}] is {len(audio) / sampling_rate:.2f} s, "
                             f"longer than the {window_seconds:g} s window")
    extractor = whisper_feature_extractor(feature_size, sampling_rate)
    batch = extractor([np.asarray(a, dtype=np.float32) for a in audio_batch], sampling_rate=sampling_rate,
                      padding="max_length", max_length=window_samples, truncation=True,
                      return_attention_mask=True, return_tensors="pt")
    mel_frames = batch["attention_mask"].sum(dim=1).long()
    return batch["input_features"], encoder_frames(mel_frames)


def whisper_encode_fn(encoder: torch.nn.Module, window_seconds: float = 30.0, feature_size: int = 80,
                      device: str | torch.device = "cpu") -> Callable[[Sequence[np.ndarray]], list[torch.Tensor]]:
    """Wrap a frozen Whisper encoder (e.g. transformers' ``WhisperEncoder``, built with
    ``max_source_positions = window_seconds * 50``) as ``waveforms -> [valid_frames, D]`` tensors,
    the form :class:`~lalm_fast.data.cache.FeatureCache` stores."""

    @torch.inference_mode()
    def encode(waveforms: Sequence[np.ndarray]) -> list[torch.Tensor]:
        features, frames = log_mel(waveforms, window_seconds, feature_size)
        dtype = next(encoder.parameters()).dtype
        hidden = encoder(features.to(device=device, dtype=dtype)).last_hidden_state
        return [row[:n].cpu() for row, n in zip(hidden, frames.tolist())]

    return encode
