"""On-disk cache of a frozen encoder's outputs, so repeated runs (epochs, sweeps over
compression rates) decode and encode each clip once.

One safetensors file per utterance, under ``<root>/<key[:2]>/<key>.safetensors``, holding the
valid frames ``[T, D]`` in float16. The key hashes the audio file's absolute path, its size
and modification time (an edited file is a miss), the encoder's identity string (say its
checkpoint's sha256) and the window, so caches for different encoders can share a folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lalm_fast.data.audio import UtteranceLoader
from lalm_fast.data.errors import AudioError
from lalm_fast.data.files import atomic_path
from lalm_fast.data.manifest import Utterance

log = logging.getLogger(__name__)

EncodeFn = Callable[[Sequence[np.ndarray]], Sequence[torch.Tensor]]


@dataclass
class CacheStats:
    hits: int = 0
    encoded: int = 0


class FeatureCache:
    """Encoder outputs per utterance, computed once.

    >>> cache = FeatureCache("~/.cache/lalm_fast/features", encoder_id="whisper-tiny.en:1a5afae0",
    ...                      window_seconds=10)
    >>> loader = UtteranceLoader(max_seconds=10, skip_bad=True)
    >>> kept = cache.ensure(utterances, whisper_encode_fn(encoder, 10), loader)
    >>> frames = cache.load(kept[0])     # [T, D] float16
    """

    def __init__(self, root: str | os.PathLike, encoder_id: str, window_seconds: float,
                 sample_rate: int = 16000, dtype: torch.dtype = torch.float16):
        if not encoder_id:
            raise ValueError("encoder_id must name the encoder (e.g. its checkpoint's sha256)")
        self.root = Path(root).expanduser()
        self.encoder_id = encoder_id
        self.window_seconds = window_seconds
        self.sample_rate = sample_rate
        self.dtype = dtype
        self.stats = CacheStats()

    def key(self, utt: Utterance) -> str:
        path = Path(os.path.abspath(utt.audio))
        try:
            info = path.stat()
        except FileNotFoundError:
            raise AudioError(path, "missing", "audio file not found") from None
        identity = [str(path), info.st_size, info.st_mtime_ns, self.encoder_id,
                    float(self.window_seconds), self.sample_rate]  # float: a 10 and a 10.0 s window match
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()

    def path_for(self, utt: Utterance) -> Path:
        key = self.key(utt)
        return self.root / key[:2] / f"{key}.safetensors"

    def load(self, utt: Utterance) -> torch.Tensor | None:
        """The cached frames of ``utt``, or None on a miss. An unreadable entry (writes are atomic,
        so only a disk fault makes one) is removed and reads as a miss; ``ensure`` redoes it."""
        path = self.path_for(utt)
        if not path.is_file():
            return None
        try:
            return load_file(path)["frames"]
        except (SafetensorError, OSError, KeyError) as exc:
            log.warning("removing unreadable cache entry %s for %s (%s)", path, utt.audio, exc)
            path.unlink(missing_ok=True)
            return None

    def store(self, utt: Utterance, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.detach().to("cpu", self.dtype).contiguous()
        metadata = {"audio": str(utt.audio), "encoder_id": self.encoder_id,
                    "window_seconds": str(self.window_seconds)}
        with atomic_path(self.path_for(utt)) as tmp:
            save_file({"frames": frames}, tmp, metadata=metadata)
        return frames

    def ensure(self, utterances: Iterable[Utterance], encode: EncodeFn, loader: UtteranceLoader,
               batch_size: int = 8) -> list[Utterance]:
        """Encode every utterance that is not cached yet, ``batch_size`` clips per ``encode``
        call. Returns the utterances now in the cache, in order; bad ones raise, or with
        ``loader.skip_bad`` are counted in ``loader.skips`` and left out. Cache hits are neither
        decoded nor encoded."""
        self._check_loader(loader)
        checked = [(utt, loader.guarded(lambda u: self._is_cached(u, loader), utt)) for utt in utterances]
        checked = [(utt, hit) for utt, hit in checked if hit is not None]
        misses = [utt for utt, hit in checked if not hit]
        self.stats.hits += len(checked) - len(misses)
        encoded = set()
        for start in range(0, len(misses), batch_size):
            encoded |= self._encode_batch(misses[start:start + batch_size], encode, loader)
        return [utt for utt, hit in checked if hit or id(utt) in encoded]

    def _check_loader(self, loader: UtteranceLoader) -> None:
        # A clip longer than the window would be cut by the encoder: the loader must reject it.
        if loader.max_seconds is None or loader.max_seconds > self.window_seconds:
            raise ValueError(f"loader.max_seconds ({loader.max_seconds}) must be at most the "
                             f"cache's window_seconds ({self.window_seconds})")
        if loader.sample_rate != self.sample_rate:
            raise ValueError(f"loader.sample_rate ({loader.sample_rate}) differs from the "
                             f"cache's sample_rate ({self.sample_rate})")

    def _is_cached(self, utt: Utterance, loader: UtteranceLoader) -> bool:
        loader.check_text(utt)  # a cached clip with an empty transcript is still bad data
        return self.path_for(utt).is_file()

    def _encode_batch(self, batch: list[Utterance], encode: EncodeFn, loader: UtteranceLoader) -> set[int]:
        """Encode and store the good utterances of ``batch``; returns their ``id()``s."""
        loaded = list(loader.iter_loaded(batch))
        if not loaded:
            return set()
        outputs = encode([audio for _, audio in loaded])
        if len(outputs) != len(loaded):
            raise ValueError(f"encode returned {len(outputs)} outputs for {len(loaded)} clips")
        for (utt, _), frames in zip(loaded, outputs):
            self.store(utt, frames)
        self.stats.encoded += len(loaded)
        return {id(utt) for utt, _ in loaded}
