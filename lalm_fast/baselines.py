"""Baselines a user would pick instead of a compressed LALM: Whisper's own decoder.

:func:`whisper_baseline` transcribes a manifest with a Whisper model (by default the packaged
tiny.en, see :mod:`lalm_fast.models.pretrained`) - greedy, no timestamps, English, the
ordinary 30 s input window - and scores WER with :func:`lalm_fast.evaluate.wer` (jiwer after
Whisper-style normalisation), overall and per group of utterances (by default the
``voice_group`` the synthetic corpora record, see :mod:`lalm_fast.data.corpora`)::

    from lalm_fast.baselines import whisper_baseline
    result = whisper_baseline("corpora/asr_test.jsonl")
    print(result)                       # WER overall and per voice group, RTF
    result.add_to(report)               # a row of an EvalReport
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from lalm_fast.data.audio import UtteranceLoader
from lalm_fast.data.files import atomic_write
from lalm_fast.data.manifest import Utterance, read_manifest
from lalm_fast.evaluate import EvalReport, WerResult, real_time_factor, wer, wer_by_group
from lalm_fast.evaluate.repetition import guarded_wer

DEFAULT_WHISPER = "packaged:tiny.en"
WHISPER_TOKENS_PER_SECOND = 50.0  # the encoder frames Whisper's decoder cross-attends to, per second


@dataclass
class BaselineResult:
    name: str
    wer: WerResult
    groups: dict[str, WerResult]  # per value of the group key
    group_counts: dict[str, int]
    references: list[str]
    hypotheses: list[str]
    ids: list[str]
    audio_seconds: float
    compute_seconds: float  # transcription only (model loading excluded)
    wer_guarded: Optional[WerResult] = None  # after the repetition guard (lalm_fast.evaluate.repetition)
    groups_guarded: dict[str, WerResult] = field(default_factory=dict)
    skipped: str = ""  # the loader's skip report, if any utterance was skipped
    settings: dict = field(default_factory=dict)

    @property
    def real_time_factor(self) -> float:
        return real_time_factor(self.compute_seconds, self.audio_seconds)

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.wer}, {len(self.ids)} utterances, {self.audio_seconds / 60:.1f} min of audio, "
                 f"RTF {self.real_time_factor:.3f}"]
        lines += [f"  {group}: {result} ({self.group_counts[group]} utterances)"
                  for group, result in sorted(self.groups.items())]
        if self.skipped:
            lines.append(f"  {self.skipped}")
        return "\n".join(lines)

    def add_to(self, report: EvalReport, name: str | None = None):
        """Add one row (overall WER, RTF, per-group WER % as extra columns) to ``report``."""
        extra = {f"WER % {group}": round(100 * result.wer, 2) for group, result in sorted(self.groups.items())}
        return report.add(name or self.name, audio_tokens_per_second=WHISPER_TOKENS_PER_SECOND, wer=self.wer,
                          real_time_factor=self.real_time_factor, **extra)

    def save_hypotheses(self, path: str | os.PathLike) -> None:
        """Tab-separated ``id  reference  hypothesis`` lines, written atomically."""
        with atomic_write(path) as handle:
            for utt_id, reference, hypothesis in zip(self.ids, self.references, self.hypotheses):
                handle.write(f"{utt_id}\t{reference}\t{hypothesis}\n")


def load_whisper(source: str | os.PathLike = DEFAULT_WHISPER):
    """``(model, processor)``: a local Hugging Face folder or ``packaged:<name>``."""
    from lalm_fast.models.pretrained import load_whisper_model

    return load_whisper_model(source)


def transcribe(model, processor, audios: Sequence, *, batch_size: int = 16, max_length: int = 128,
               progress: bool = False, desc: str = "transcribing") -> list[str]:
    """Greedy transcripts of 16 kHz waveforms, without timestamps, in the given order.

    English-only models need no language; a multilingual one is told English / transcribe.
    Batches are formed from similar lengths (fewer decoder steps wasted on padding).
    ``max_length`` (decoder tokens, the 3-token prompt included) bounds a runaway repetition;
    a 20-word verse is ~30 tokens.
    """
    import torch
    from tqdm.auto import tqdm

    language = {} if not getattr(model.generation_config, "is_multilingual", False) else {
        "language": "en", "task": "transcribe"}
    order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
    texts: list[str | None] = [None] * len(audios)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True):
        inputs = processor.feature_extractor([audios[i] for i in batch], sampling_rate=16000,
                                             return_tensors="pt", return_attention_mask=True)
        with torch.inference_mode():
            tokens = model.generate(inputs.input_features.to(model.dtype), attention_mask=inputs.attention_mask,
                                    do_sample=False, num_beams=1, max_length=max_length, return_timestamps=False,
                                    **language)
        for i, text in zip(batch, processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)):
            texts[i] = text.strip()
    return texts


def whisper_baseline(manifest: str | os.PathLike | Sequence[Utterance], source: str | os.PathLike = DEFAULT_WHISPER,
                     *, batch_size: int = 16, group_key: str | None = "voice_group", limit: int | None = None,
                     max_length: int = 128, progress: bool = True, name: str | None = None,
                     model_and_processor=None) -> BaselineResult:
    """WER of a Whisper model's own decoder on a manifest (path or utterances).

    Utterances that cannot be loaded are skipped and reported (``result.skipped``), clips over
    30 s too (Whisper's window). Per-group WER uses ``utt.extra[group_key]``; pass None for none.
    ``limit`` takes the first N utterances. ``model_and_processor`` reuses a loaded model.
    """
    utterances = read_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    if limit is not None:
        utterances = utterances[:limit]
    if not utterances:
        raise ValueError("no utterances to transcribe")
    model, processor = model_and_processor or load_whisper(source)
    loader = UtteranceLoader(sample_rate=16000, max_seconds=30.0, skip_bad=True)
    loaded = list(loader.iter_loaded(utterances))
    if not loaded:
        raise ValueError(f"none of the {len(utterances)} utterances could be loaded: {loader.skips}")
    kept = [utt for utt, _ in loaded]
    audios = [audio for _, audio in loaded]

    start = time.perf_counter()
    hypotheses = transcribe(model, processor, audios, batch_size=batch_size, max_length=max_length,
                            progress=progress)
    compute_seconds = time.perf_counter() - start

    references = [utt.text for utt in kept]
    labels = [utt.extra.get(group_key) if group_key else None for utt in kept]
    per_group = wer_by_group(references, hypotheses, labels)
    overall_guarded, groups_guarded = guarded_wer(references, hypotheses, labels)
    source_name = str(source).removeprefix("packaged:") if str(source).startswith("packaged:") else Path(source).name
    label = name or f"Whisper {source_name} (own decoder)"
    return BaselineResult(
        name=label, wer=wer(references, hypotheses), groups=per_group, wer_guarded=overall_guarded,
        groups_guarded=groups_guarded,
        group_counts=dict(Counter(str(g) for g in labels if g is not None)), references=references,
        hypotheses=hypotheses, ids=[utt.id for utt in kept],
        audio_seconds=sum(len(audio) for audio in audios) / 16000, compute_seconds=compute_seconds,
        skipped=str(loader.skips) if loader.skips.total else "",
        settings={"source": str(source), "batch_size": batch_size, "max_length": max_length,
                  "decoding": "greedy, no timestamps, 30 s window"})
