"""Evaluation.

- :mod:`lalm_fast.evaluate.metrics`: WER (jiwer) after Whisper-style English normalisation, a
  paired bootstrap interval for the WER (or BLEU) difference of two systems, corpus BLEU (sacrebleu,
  with its signature), audio tokens per second, real-time factor, and a JSON + markdown report. Needs only
  jiwer, sacrebleu and numpy.
- :mod:`lalm_fast.evaluate.model`: a trained :class:`~lalm_fast.models.AudioLM` scored on a dataset
  (:func:`evaluate_model`, :func:`decode_metrics`, :func:`evaluate_to_files`, what ``lalm-fast eval``
  runs). Loaded on first use: it needs the training data stack, which the metrics do not, and
  :mod:`lalm_fast.training` uses it in turn.
"""

from lalm_fast.evaluate.metrics import (BleuDifference, BleuResult, EvalReport, EvalRow, PairedDifference,
                                        WerDifference, WerResult, audio_tokens_per_second, bleu, bleu_difference,
                                        normalize_english, real_time_factor, wer, wer_by_group, wer_difference)

_MODEL_NAMES = ("decode_metrics", "evaluate_model", "evaluate_to_files")

__all__ = ["BleuDifference", "BleuResult", "EvalReport", "EvalRow", "PairedDifference", "WerDifference", "WerResult",
           "audio_tokens_per_second", "bleu", "bleu_difference", "normalize_english", "real_time_factor", "wer",
           "wer_by_group", "wer_difference", *_MODEL_NAMES]


def __getattr__(name: str):
    if name in _MODEL_NAMES:
        from lalm_fast.evaluate import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
