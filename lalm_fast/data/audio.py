"""Reading audio (soundfile), resampling (scipy's polyphase filter) and the per-utterance checks
that turn bad data into a clear error or a counted skip."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from lalm_fast.data.errors import AudioError, DataError, SkipReport, TranscriptError
from lalm_fast.data.manifest import Utterance

T = TypeVar("T")


def load_audio(path: str | os.PathLike, target_sr: int | None = 16000, resample: bool = True) -> np.ndarray:
    """Read an audio file as mono float32 in [-1, 1] at ``target_sr`` Hz.

    Channels are averaged. A file at another rate is resampled with
    ``scipy.signal.resample_poly`` (polyphase FIR with an anti-aliasing filter), or, with
    ``resample=False``, rejected. ``target_sr=None`` keeps the file's own rate. Raises
    :class:`AudioError` naming the file when it is missing, unreadable, empty or not finite.
    """
    audio, file_sr = _read(Path(path))
    if target_sr is not None and file_sr != target_sr:
        if not resample:
            raise AudioError(path, "sample_rate", f"sample rate {file_sr} Hz, expected {target_sr} Hz")
        audio = resample_audio(audio, file_sr, target_sr)
    return audio


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise AudioError(path, "missing", "audio file not found")


def _read(path: Path) -> tuple[np.ndarray, int]:
    _require_file(path)
    try:
        audio, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except sf.SoundFileError as exc:  # unknown format, bad header, truncated stream
        raise AudioError(path, "corrupt", f"cannot decode audio ({exc})") from None
    if audio.size == 0:
        raise AudioError(path, "empty_audio", "audio file has no samples")
    audio = audio.mean(axis=1, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise AudioError(path, "corrupt", "audio contains NaN or infinite samples")
    return audio, sample_rate


def resample_audio(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling by the reduced ratio (22050 -> 16000 is up 320, down 441);
    the output has ``ceil(len * target_sr / orig_sr)`` samples."""
    common = math.gcd(orig_sr, target_sr)
    resampled = resample_poly(audio, target_sr // common, orig_sr // common)
    return resampled.astype(np.float32, copy=False)


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file header, without decoding the samples."""
    _require_file(Path(path))
    try:
        return sf.info(str(path)).duration
    except sf.SoundFileError as exc:
        raise AudioError(path, "corrupt", f"cannot read audio header ({exc})") from None


class UtteranceLoader:
    """Loads utterances' audio and enforces the data rules, raising or counting skips.

    Rules: the audio file exists and decodes to a non-empty signal; at ``sample_rate`` (after
    resampling, or exactly when ``resample=False``); no longer than ``max_seconds`` (the
    encoder window: Whisper would silently cut the rest); a non-empty transcript; a non-empty
    translation when ``require_translation``. With ``skip_bad=True`` a broken utterance is
    counted in ``self.skips`` (by reason, with the file named) and left out instead of raising.
    """

    def __init__(self, sample_rate: int = 16000, max_seconds: float | None = 30.0, *,
                 resample: bool = True, require_translation: bool = False, skip_bad: bool = False):
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.resample = resample
        self.require_translation = require_translation
        self.skip_bad = skip_bad
        self.skips = SkipReport()

    def check_text(self, utt: Utterance) -> Utterance:
        if not utt.text.strip():
            raise TranscriptError(utt.audio, "empty_text", f"utterance {utt.id!r} has an empty transcript")
        if self.require_translation and not (utt.translation or "").strip():
            raise TranscriptError(utt.audio, "empty_translation",
                                  f"utterance {utt.id!r} has an empty translation")
        return utt

    def load(self, utt: Utterance) -> np.ndarray:
        """Check ``utt`` and return its audio; raises :class:`DataError` on bad data."""
        self.check_text(utt)
        audio = load_audio(utt.audio, self.sample_rate, self.resample)
        seconds = len(audio) / self.sample_rate
        if self.max_seconds is not None and seconds > self.max_seconds:
            raise AudioError(utt.audio, "too_long",
                             f"clip is {seconds:.2f} s, longer than the {self.max_seconds:g} s window")
        return audio

    def guarded(self, action: Callable[[Utterance], T], utt: Utterance) -> T | None:
        """``action(utt)``; under ``skip_bad`` a :class:`DataError` is counted and gives None."""
        try:
            return action(utt)
        except DataError as error:
            if not self.skip_bad:
                raise
            self.skips.add(error)
            return None

    def iter_loaded(self, utterances: Iterable[Utterance]) -> Iterator[tuple[Utterance, np.ndarray]]:
        """Yield ``(utterance, audio)`` for each good utterance, in order."""
        for utt in utterances:
            audio = self.guarded(self.load, utt)
            if audio is not None:
                yield utt, audio
