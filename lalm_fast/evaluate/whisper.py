"""``lalm-fast eval`` for a Whisper adapted by the Whisper track: an adapter folder saved with
:func:`lalm_fast.integrations.lora.save_adapter` (the compressor config beside the peft adapter),
scored on any manifest (wav / flac at any sample rate, resampled to 16 kHz)."""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_BASE = "packaged:tiny.en"  # the Whisper the committed adapters were trained on

__all__ = ["DEFAULT_BASE", "is_whisper_adapter", "score_adapters", "evaluate_whisper_to_files"]


def is_whisper_adapter(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a Whisper LoRA adapter saved with its compressor."""
    from lalm_fast.integrations.lora import COMPRESSOR_FILE

    config = Path(folder) / "adapter_config.json"
    if not (config.is_file() and (Path(folder) / COMPRESSOR_FILE).is_file()):
        return False
    mapping = json.loads(config.read_text()).get("auto_mapping") or {}
    return mapping.get("base_model_class") == "WhisperForConditionalGeneration"


def score_adapters(folders: Sequence[str | os.PathLike], utterances: list, base: Optional[str] = None,
                   max_new_tokens: int = 64, batch_size: int = 16, progress: bool = True) -> tuple[list[dict], dict]:
    """Greedy scores (:func:`lalm_fast.whisper_track.evaluate`) of each adapted Whisper in ``folders``
    on ``utterances``, which are encoded once; and ``{"skipped", "encode_seconds", "audio_seconds"}``."""
    from lalm_fast import whisper_track
    from lalm_fast.integrations.lora import load_adapter
    from lalm_fast.integrations.whisper import apply_compression

    model, tokenizer, identity = whisper_track.load_model(base or DEFAULT_BASE)
    started = time.perf_counter()
    # Encode before any patch: a patched encoder would return compressed frames, which the
    # decoder would then compress a second time.
    with tempfile.TemporaryDirectory() as cache_dir:  # this call's encoder outputs only
        split = whisper_track.cached_split(utterances, model, identity, Path(cache_dir), "eval")
    encode_seconds = time.perf_counter() - started
    scores = []
    for folder in folders:
        adapted, compressor, _ = load_adapter(copy.deepcopy(model), folder)
        apply_compression(adapted, compressor)
        scores.append(whisper_track.evaluate(adapted.eval(), tokenizer, split, compressor.config(), batch_size,
                                             max_new_tokens, Path(folder).name if progress else ""))
    return scores, {"skipped": len(utterances) - len(split.utterances), "encode_seconds": encode_seconds,
                    "audio_seconds": split.audio_seconds}


def evaluate_whisper_to_files(model_dir: str | os.PathLike, manifest: str | os.PathLike,
                              out_dir: str | os.PathLike, base: Optional[str] = None,
                              limit: Optional[int] = None, max_new_tokens: int = 64) -> dict:
    """Greedy WER (overall and per ``voice_group`` when the manifest has one) of the adapted
    Whisper with its compressor; writes eval.json, eval.md and predictions.jsonl."""
    from lalm_fast.data import read_manifest
    from lalm_fast.evaluate.metrics import EvalReport, WerResult
    from lalm_fast.evaluate.model import write_predictions
    from lalm_fast.nn import build_compressor

    utterances = read_manifest(manifest)[:limit]
    (metrics,), info = score_adapters([model_dir], utterances, base, max_new_tokens)
    report = EvalReport(f"{Path(manifest).name}: {model_dir}")
    groups = {f"WER % {group}": round(100 * value, 2) for group, value in sorted(metrics["wer_groups"].items())}
    compressor = build_compressor(metrics["compressor"])
    report.add(f"Whisper {base or DEFAULT_BASE} + LoRA, {compressor.config()}",
               audio_tokens_per_second=metrics["audio_tokens_per_second"], wer=WerResult(**metrics["wer_detail"]),
               skipped=info["skipped"], **groups)
    out_dir = Path(out_dir)
    report.save(out_dir / "eval.json", out_dir / "eval.md")
    write_predictions(out_dir / "predictions.jsonl", metrics["predictions"])
    return metrics
