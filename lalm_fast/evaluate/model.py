"""Scoring a trained :class:`~lalm_fast.models.AudioLM` (or a
:class:`~lalm_fast.integrations.native_lm.NativeAudioLM`) on a dataset: loss, and WER / BLEU of greedy
decoding; what periodic evaluation during training and ``lalm-fast eval`` run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from lalm_fast.data import read_manifest
from lalm_fast.evaluate.metrics import EvalReport, audio_tokens_per_second, bleu, wer
from lalm_fast.evaluate.repetition import guarded_wer
from lalm_fast.training.config import DataSpec, saved_spec
from lalm_fast.training.dataset import Dataset, audio_inputs, epoch_batches, is_translation
from lalm_fast.training.models import load_trained

__all__ = ["decode_metrics", "evaluate_model", "evaluate_to_files", "read_predictions", "write_predictions"]


@torch.no_grad()
def evaluate_model(model, dataset: Dataset, data_spec: DataSpec, generate: Optional[int] = None,
                   count_tokens: bool = False) -> dict:
    """Token-weighted mean loss over ``dataset``, and WER (or BLEU for translation) of greedy
    decoding on its first ``generate`` utterances (default ``data_spec.eval_generate``)."""
    was_training = model.training
    model.eval()
    loss_sum, tokens, audio_tokens, seconds = 0.0, 0, 0, 0.0
    for indices in epoch_batches(dataset.durations, data_spec, seed=0, epoch=0):
        batch = dataset.load(indices)
        if batch is None:
            continue
        audio, lengths, targets, batch_seconds = batch
        out = model(**audio_inputs(dataset, audio, lengths), tasks=batch.tasks, targets=targets)
        n = int((out.inputs.labels[:, 1:] != -100).sum())  # the LM's loss is a mean over shifted targets
        loss_sum, tokens = loss_sum + out.loss.item() * n, tokens + n
        audio_tokens, seconds = audio_tokens + int(out.inputs.audio_lengths.sum()), seconds + batch_seconds
    result = {"loss": loss_sum / max(tokens, 1),
              "audio_tokens_per_second": audio_tokens_per_second(audio_tokens, seconds) if seconds else None}
    result.update(decode_metrics(model, dataset, data_spec, generate, count_tokens=count_tokens))
    model.train(was_training)
    return result


def decode_metrics(model, dataset: Dataset, data_spec: DataSpec, generate: Optional[int],
                   progress: Optional[str] = None, count_tokens: bool = False) -> dict:
    """Greedy decoding of the first ``generate`` utterances in batches: WER and/or BLEU (by task),
    4 samples, and every ``decoded`` id / reference / hypothesis (and ``audio_tokens``, the
    compressed audio's length, with ``count_tokens``: one more compressor pass per batch).
    ``progress``: a tqdm label."""
    from tqdm.auto import tqdm

    count = min(len(dataset.utterances), data_spec.eval_generate if generate is None else generate)
    references, hypotheses, kinds, ids, counts = [], [], [], [], []
    step = data_spec.batch_size or 8
    for start in tqdm(range(0, count, step), desc=progress, unit="batch", disable=progress is None,
                      leave=False, dynamic_ncols=True):
        indices = list(range(start, min(start + step, count)))
        batch = dataset.load(indices)
        if batch is None:
            continue
        audio, lengths, targets, _ = batch
        hypotheses += model.generate(**audio_inputs(dataset, audio, lengths), tasks=batch.tasks,
                                     max_new_tokens=data_spec.max_new_tokens)
        if count_tokens:
            counts += _audio_token_counts(model, dataset, audio, lengths)
        references += targets
        kinds += ["bleu" if is_translation(task) else "wer" for task in batch.tasks]
        ids += batch.ids
    if not references:
        return {}
    result: dict[str, Any] = {}
    for kind, score in (("wer", wer), ("bleu", bleu)):
        pairs = [(r, h) for r, h, k in zip(references, hypotheses, kinds) if k == kind]
        if pairs:
            result[kind] = score([r for r, _ in pairs], [h for _, h in pairs])
    if "wer" in result:
        asr = [(r, h) for r, h, k in zip(references, hypotheses, kinds) if k == "wer"]
        result["wer_guarded"] = guarded_wer([r for r, _ in asr], [h for _, h in asr])[0]
    result["samples"] = [{"reference": r, "hypothesis": h} for r, h in list(zip(references, hypotheses))[:4]]
    result["decoded"] = [{"id": i, "reference": r, "hypothesis": h} for i, r, h in zip(ids, references, hypotheses)]
    for row, count in zip(result["decoded"], counts):
        row["audio_tokens"] = count
    return result


@torch.no_grad()
def _audio_token_counts(model, dataset: Dataset, audio: torch.Tensor, lengths: torch.Tensor) -> list[int]:
    inputs = audio_inputs(dataset, audio, lengths)
    if getattr(dataset, "native", False):
        return model.audio_token_counts(**inputs).tolist()
    if dataset.cached:
        return model.compress_states(inputs["encoder_states"], inputs["encoder_lengths"]).lengths.tolist()
    return model.encode_audio(inputs["input_features"], inputs["frame_lengths"]).lengths.tolist()


def write_predictions(path: str | os.PathLike, rows: list[dict]) -> Path:
    """One JSON object per utterance (``id``, ``reference``, ``hypothesis``, ``audio_tokens``), atomically."""
    from lalm_fast.data.files import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_predictions(path: str | os.PathLike) -> dict[str, dict]:
    """What :func:`write_predictions` wrote, by utterance id."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {row["id"]: row for row in map(json.loads, filter(str.strip, lines))}


def evaluate_to_files(model_dir: str | os.PathLike, manifest: str | os.PathLike, out_dir: str | os.PathLike,
                      generate: Optional[int] = None, skip_bad: bool = False) -> dict:
    """``lalm-fast eval``: score a trained model on a manifest; writes eval.json, eval.md and
    predictions.jsonl (one line per decoded utterance)."""
    model, spec = load_trained(model_dir)
    data_spec = saved_spec(model_dir, "data")
    data_spec.skip_bad = skip_bad
    dataset = Dataset(read_manifest(manifest), spec, data_spec)
    result = evaluate_model(model, dataset, data_spec, len(dataset.utterances) if generate is None else generate,
                            count_tokens=True)
    report = EvalReport(f"{Path(manifest).name}: {model_dir}")
    report.add(f"{spec.native or f'{spec.encoder} + {spec.lm}'}, {model.compressor!r}",
               audio_tokens_per_second=result["audio_tokens_per_second"], wer=result.get("wer"),
               bleu=result.get("bleu"), loss=round(result["loss"], 4), skipped=dataset.loader.skips.total)
    out_dir = Path(out_dir)
    report.save(out_dir / "eval.json", out_dir / "eval.md")
    write_predictions(out_dir / "predictions.jsonl", result.get("decoded", []))
    return result
