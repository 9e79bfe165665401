"""Training data: manifests (or synthetic tones) as batches of features or cached encoder states."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from lalm_fast.data import (Utterance, UtteranceLoader, audio_duration, bucket_batches, log_mel, read_manifest,
                            write_manifest)
from lalm_fast.data.cache import FeatureCache
from lalm_fast.data.errors import AudioError
from lalm_fast.training.config import SYNTHETIC, TINY_RANDOM, DataSpec, ModelSpec

__all__ = ["AUTO_TASK", "FEATURE_CACHE", "LANGUAGE_NAMES", "Batch", "Dataset", "audio_inputs", "encoder_identity",
           "epoch_batches", "feature_cache", "is_translation", "make_synthetic", "native_sampling_rate",
           "normalize_target", "open_dataset", "uses_cache"]

FEATURE_CACHE = "feature_cache" # default cache folder inside the run's output_dir
AUTO_TASK = "auto"              # data.task: per utterance, from its lang pair (see Dataset.task_of)
LANGUAGE_NAMES = {"es": "Spanish", "en": "English", "de": "German", "fr": "French", "it": "Italian",
                  "pt": "Portuguese", "ca": "Catalan", "zh": "Chinese", "ja": "Japanese", "nl": "Dutch"}


class Dataset:
    """A manifest's usable utterances, their durations, and batch loading under the bad-data rules.

    Text and duration (manifest field, else the file header) are checked up front, so a missing
    file or an over-long clip is found before training; a file that only fails to decode is
    found when its batch is loaded. Either raises naming the file, or with ``skip_bad`` is counted
    in ``self.loader.skips``.
    """

    def __init__(self, utterances: list[Utterance], model_spec: ModelSpec, data_spec: DataSpec,
                 cache: Optional[FeatureCache] = None, encode=None):
        self.window, self.mel_bins, self.task = model_spec.window_seconds, model_spec.mel_bins, data_spec.task
        self.normalize = data_spec.normalize_targets
        # A native model takes waveforms at its own processor's rate; AudioLM takes 16 kHz log-mel.
        self.native = bool(model_spec.native)
        rate = native_sampling_rate(model_spec.native) if self.native else 16000
        if self.native and cache is not None:
            raise ValueError("a native model (model.native) runs its own audio tower: no feature cache")
        self.loader = UtteranceLoader(sample_rate=rate, max_seconds=self.window, skip_bad=data_spec.skip_bad,
                                      require_translation=is_translation(self.task))
        checked = [(utt, self.loader.guarded(self._duration, utt)) for utt in utterances]
        self.utterances = [utt for utt, seconds in checked if seconds is not None]
        self.durations = [seconds for _, seconds in checked if seconds is not None]
        self.cache, self.encode, self._batch_size = cache, encode, data_spec.batch_size or 8
        if cache is not None:
            if encode is None:
                raise ValueError("a Dataset with a feature cache needs encode (waveforms -> encoder states)")
            # Encode what is not cached yet, once; clips that fail to decode are found (and
            # counted under skip_bad) here, before training, instead of when their batch loads.
            kept = {id(utt) for utt in cache.ensure(self.utterances, encode, self.loader, self._batch_size)}
            pairs = [(utt, seconds) for utt, seconds in zip(self.utterances, self.durations) if id(utt) in kept]
            self.utterances, self.durations = [u for u, _ in pairs], [d for _, d in pairs]
        if not self.utterances:
            raise ValueError(f"no usable utterances ({self.loader.skips})")

    @property
    def cached(self) -> bool:
        return self.cache is not None

    def _duration(self, utt: Utterance) -> float:
        self.loader.check_text(utt)
        seconds = utt.duration if utt.duration is not None else audio_duration(utt.audio)
        if seconds > self.window:
            raise AudioError(utt.audio, "too_long", f"clip is {seconds:.2f} s, longer than the {self.window:g} s window")
        return seconds

    def load(self, indices: list[int]):
        """``(features, mel_frames, targets, seconds)`` of the loadable ones among ``indices``; None if none is.
        With a cache: ``(encoder_states [B, T, D] float16, encoder_frames, targets, seconds)``; for a native
        model: ``(waveforms [B, samples] float32, samples, targets, seconds)``. :func:`audio_inputs` names them
        for the model."""
        if self.cache is not None:
            return self._load_cached(indices)
        loaded = [(i, self.loader.guarded(self.loader.load, self.utterances[i])) for i in indices]
        loaded = [(i, audio) for i, audio in loaded if audio is not None]
        if not loaded:
            return None
        if self.native:
            waves = [torch.from_numpy(np.asarray(audio, dtype=np.float32)) for _, audio in loaded]
            lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
            return self._batch([i for i, _ in loaded], torch.nn.utils.rnn.pad_sequence(waves, batch_first=True),
                               lengths)
        features, encoder_frames = log_mel([audio for _, audio in loaded], self.window, self.mel_bins)
        # AudioLM counts input (mel) frames; 2 per encoder frame.
        return self._batch([i for i, _ in loaded], features, encoder_frames * 2)

    def _load_cached(self, indices: list[int]):
        loaded = [(i, self._cached_states(self.utterances[i])) for i in indices]
        loaded = [(i, frames) for i, frames in loaded if frames is not None]
        if not loaded:
            return None
        states = torch.nn.utils.rnn.pad_sequence([frames for _, frames in loaded], batch_first=True)
        lengths = torch.tensor([len(frames) for _, frames in loaded], dtype=torch.long)
        return self._batch([i for i, _ in loaded], states, lengths)

    def _cached_states(self, utt: Utterance) -> Optional[torch.Tensor]:
        frames = self.cache.load(utt)
        if frames is None:  # removed or unreadable since the start: encode it again
            if self.cache.ensure([utt], self.encode, self.loader):
                frames = self.cache.load(utt)
        return frames

    def task_of(self, utt: Utterance) -> Any:
        """The task of one utterance: ``data.task``, or with ``"auto"`` translation into the target
        language of a pair ``lang`` (``"en-es"`` -> Spanish) when it has a translation, else transcription."""
        if self.task != AUTO_TASK:
            return self.task
        lang = (utt.lang or "").split("-")
        if len(lang) == 2 and utt.translation:
            return {"task": "translate", "lang": LANGUAGE_NAMES.get(lang[1], lang[1])}
        return "transcribe"

    def target(self, utt: Utterance) -> str:
        text = utt.translation if is_translation(self.task_of(utt)) else utt.text
        return normalize_target(text) if self.normalize else text

    def _batch(self, indices: list[int], audio, lengths) -> "Batch":
        utts = [self.utterances[i] for i in indices]
        batch = Batch((audio, lengths, [self.target(u) for u in utts], sum(self.durations[i] for i in indices)))
        batch.tasks, batch.texts = [self.task_of(u) for u in utts], [u.text for u in utts]
        batch.ids = [u.id for u in utts]
        return batch


class Batch(tuple):
    """``(audio, lengths, targets, seconds)`` of :meth:`Dataset.load`, with ``tasks`` (one per sample),
    ``texts`` (the transcripts, whatever the task) and ``ids`` (the utterance ids) as attributes."""

    tasks: list
    texts: list[str]
    ids: list[str]

_PUNCTUATION = re.compile(r"[^\w\s']|_")


def normalize_target(text: str) -> str:
    """Lower case, punctuation (but apostrophes inside words) as spaces, spaces collapsed; accents kept
    (Spanish targets stay Spanish). What ``data.normalize_targets`` trains on."""
    text = _PUNCTUATION.sub(" ", text.lower())
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def is_translation(task: Any) -> bool:
    return isinstance(task, dict) and task.get("task") == "translate"


def audio_inputs(dataset: Dataset, audio: torch.Tensor, lengths: torch.Tensor) -> dict:
    """The model's keyword arguments for the first two items of ``dataset.load(...)``."""
    if getattr(dataset, "native", False):
        return {"waveforms": audio, "sample_lengths": lengths}
    if dataset.cached:
        return {"encoder_states": audio, "encoder_lengths": lengths}
    return {"input_features": audio, "frame_lengths": lengths}


def open_dataset(source: str, model_spec: ModelSpec, data_spec: DataSpec, run_dir: Path,
                 cache: Optional[FeatureCache] = None, encode=None) -> Dataset:
    if source.startswith(SYNTHETIC):
        utterances = make_synthetic(run_dir / "synthetic", int(source[len(SYNTHETIC):]), model_spec.seed)
    else:
        utterances = read_manifest(source)
    return Dataset(utterances, model_spec, data_spec, cache, encode)


def uses_cache(model_spec: ModelSpec, data_spec: DataSpec) -> bool:
    """Whether a run caches encoder outputs: ``data.cache``, by default on for a frozen encoder (never for a
    native model, whose own audio tower runs every step)."""
    if model_spec.native:
        if data_spec.cache:
            raise ValueError("data.cache needs an AudioLM encoder: a native model (model.native) runs its own audio "
                             "tower every step")
        return False
    if data_spec.cache is None:
        return model_spec.freeze_encoder
    if data_spec.cache and not model_spec.freeze_encoder:
        raise ValueError("data.cache needs model.freeze_encoder: a trained encoder's outputs change every step")
    return bool(data_spec.cache)


def native_sampling_rate(folder: str | Path) -> int:
    """The sampling rate a native model's processor expects, read from the folder's processor config
    (``processor_config.json`` or ``preprocessor_config.json``) without loading transformers."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = Path(folder) / name
        if not path.is_file():
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        for part in (record, record.get("feature_extractor"), record.get("audio_processor")):
            if isinstance(part, dict) and isinstance(part.get("sampling_rate"), int):
                return part["sampling_rate"]
    raise ValueError(f"{folder} has no processor config with a sampling_rate (processor_config.json or "
                     "preprocessor_config.json): save the processor with save_pretrained into the model folder")


def encoder_identity(spec: ModelSpec) -> str:
    """What makes cached encoder outputs reusable: the encoder source (with the seed for tiny-random
    weights, and the size and time of each weight file for a local folder), window and mel bins."""
    identity: dict[str, Any] = {"encoder": spec.encoder, "window_seconds": float(spec.window_seconds),
                                "mel_bins": spec.mel_bins}
    if spec.encoder == TINY_RANDOM:
        identity["seed"] = spec.seed
    elif Path(spec.encoder).is_dir():
        folder = Path(spec.encoder).resolve()
        identity["encoder"] = str(folder)
        identity["files"] = sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in folder.iterdir()
                                   if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"{spec.encoder}|window={float(spec.window_seconds):g}s|mel={spec.mel_bins}|{digest}"


def feature_cache(model_spec: ModelSpec, data_spec: DataSpec, output_dir: Path) -> FeatureCache:
    root = Path(data_spec.cache_dir) if data_spec.cache_dir else output_dir / FEATURE_CACHE
    return FeatureCache(root, encoder_identity(model_spec), model_spec.window_seconds)


def make_synthetic(folder: Path, count: int, seed: int = 0) -> list[Utterance]:
    """``count`` clips of one tone per word (0.15 s each) over the tiny vocabulary, as FLAC + manifest.
    The same arguments write the same files, so repeated and resumed runs see the same data."""
    import soundfile as sf

    from lalm_fast.models.tiny import WORDS

    words, rate = WORDS[5:], 16000
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.15 * rate)) / rate
    utterances = []
    for n in range(count):
        picked = [words[i] for i in rng.integers(0, len(words), size=int(rng.integers(2, 5)))]
        audio = np.concatenate([0.3 * np.sin(2 * np.pi * (200 + 90 * words.index(w)) * t) for w in picked])
        path = folder / f"utt{n:04d}.flac"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio.astype(np.float32), rate)
        utterances.append(Utterance(audio=path, text=" ".join(picked), duration=len(audio) / rate))
    write_manifest(folder / "manifest.jsonl", utterances)
    return utterances


def epoch_batches(durations: list[float], data_spec: DataSpec, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: length-bucketed, shuffled by (seed, epoch) only."""
    max_frames = data_spec.max_frames * 100 if data_spec.max_frames else None  # seconds -> mel frames
    lengths = [round(d * 100) for d in durations]
    return bucket_batches(lengths, batch_size=data_spec.batch_size, max_frames=max_frames,
                          seed=seed * 1_000_003 + epoch)
