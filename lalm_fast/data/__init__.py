"""Data for training and evaluating audio LLMs.

=================  ==========================================================================
module             holds
=================  ==========================================================================
``manifest``       :class:`Utterance`, JSONL manifests, LibriSpeech and CoVoST-2 readers
``audio``          :func:`load_audio` (soundfile + scipy resampling), :class:`UtteranceLoader`
                   (the bad-data rules: raise naming the file, or count skips)
``features``       :func:`log_mel` (Whisper log-mel + valid encoder frames), :func:`whisper_encode_fn`
``batching``       :func:`bucket_batches` (deterministic length-bucketed batches)
``cache``          :class:`FeatureCache` (a frozen encoder's outputs on disk, computed once)
``errors``         :class:`DataError` and subclasses, :class:`SkipReport`
``files``          :func:`atomic_write` / :func:`atomic_path` (temp file + os.replace)
=================  ==========================================================================

Needs ``soundfile``, ``scipy`` and, for features, ``transformers``; the compression ops do not.
"""

from lalm_fast.data.audio import UtteranceLoader, audio_duration, load_audio, resample_audio
from lalm_fast.data.batching import bucket_batches
from lalm_fast.data.cache import FeatureCache
from lalm_fast.data.errors import AudioError, DataError, ManifestError, SkipReport, TranscriptError
from lalm_fast.data.features import encoder_frames, log_mel, whisper_encode_fn
from lalm_fast.data.files import atomic_path, atomic_write
from lalm_fast.data.manifest import Utterance, read_covost_tsv, read_librispeech, read_manifest, write_manifest

__all__ = [
    "AudioError", "DataError", "FeatureCache", "ManifestError", "SkipReport", "TranscriptError",
    "Utterance", "UtteranceLoader", "atomic_path", "atomic_write", "audio_duration", "bucket_batches",
    "encoder_frames", "load_audio", "log_mel", "read_covost_tsv", "read_librispeech", "read_manifest",
    "resample_audio", "whisper_encode_fn", "write_manifest",
]
