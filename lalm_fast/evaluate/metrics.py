"""Evaluation: WER (jiwer) after Whisper-style English normalisation, corpus BLEU (sacrebleu,
with its signature), audio tokens per second, real-time factor, and a JSON + markdown report.

Report WER on normalised text, as the Whisper paper does: otherwise casing, punctuation and
"twenty five" vs "25" dominate the differences between systems.
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import jiwer
import numpy as np
from sacrebleu.metrics import BLEU

from lalm_fast.data.files import atomic_write

# ---------------------------------------------------------------------------------------------
# English normalisation

_BRACKETED = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>|\{[^}]*\}")  # [noise] (laughs) <unk> {..}
_FILLERS = re.compile(r"\b(?:hmm+|mm+|mhm|uh+|um+|uhm|er|ah)\b")
_CONTRACTIONS = [  # specific forms first: "won't" is not "wo not"
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\bcannot\b", "can not"),
    (r"\bain't\b", "is not"), (r"\blet's\b", "let us"), (r"n't\b", " not"), (r"'re\b", " are"),
    (r"'ll\b", " will"), (r"'ve\b", " have"), (r"'m\b", " am"), (r"'d\b", " would"),
]
_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3}\b)")  # 1,000 -> 1000
_SYMBOLS = re.compile(r"[^\w\s'.]|_|(?<!\d)\.|\.(?!\d)")  # keep ' in words and . in 3.5
_STRAY_APOSTROPHES = re.compile(r"\B'|'\B")  # quotes, not the ' in "it's"

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}


def normalize_english(text: str) -> str:
    """Whisper-style English normalisation for WER, in this order:

    1. lower case; drop spans in brackets ``[noise]``, parentheses ``(laughs)``, ``<unk>``, braces;
    2. strip diacritics (``café`` -> ``cafe``);
    3. expand contractions other than ``'s`` (``won't`` -> ``will not``, ``we're`` -> ``we are``);
       ``'s`` stays, as it may be ``is``, ``has`` or a possessive;
    4. drop hesitations (``uh``, ``um``, ``hmm``, ``mm``, ``mhm``, ``er``, ``ah``);
    5. ``%`` -> ``percent``; ``1,000`` -> ``1000``; other punctuation and symbols become spaces
       (hyphens too: ``well-known`` -> ``well known``), keeping apostrophes inside words and
       decimal points;
    6. spelled cardinals become digits (``two hundred and five`` -> ``205``, ``twenty-one`` ->
       ``21``); digit strings said one by one stay apart (``one two`` -> ``1 2``);
    7. collapse whitespace.

    Unlike Whisper's normaliser it leaves ordinals, years said in pairs (``nineteen ninety``),
    currencies and British/American spellings alone.
    """
    text = _BRACKETED.sub(" ", text.lower())
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.replace("\u2019", "'")  # typographic apostrophe
    for pattern, replacement in _CONTRACTIONS:
        text = re.sub(pattern, replacement, text)
    text = _FILLERS.sub(" ", text)
    text = _THOUSANDS_SEPARATOR.sub("", text.replace("%", " percent "))
    text = _STRAY_APOSTROPHES.sub(" ", _SYMBOLS.sub(" ", text))
    return " ".join(_numbers_to_digits(text.split()))


def _numbers_to_digits(words: list[str]) -> list[str]:
    out, run = [], []

    def flush():
        if run:
            out.append(_spoken_value(run))
            run.clear()

    for i, word in enumerate(words):
        if _kind(word):
            if run and not _can_follow(run[-1], word):
                flush()
            run.append(word)
        elif word == "and" and _and_joins(run, words[i + 1] if i + 1 < len(words) else ""):
            run.append(word)
        else:
            flush()
            out.append(word)
    flush()
    return out


def _and_joins(run: list[str], following: str) -> bool:
    # "two hundred and five" is one number; "five and six" are two.
    return bool(run) and _kind(run[-1]) in ("hundred", "scale") and _kind(following) in _CONTINUES["and"]


def _kind(word: str) -> str | None:
    if word in _UNITS:
        return "zero" if word == "zero" else ("unit" if _UNITS[word] < 10 else "teen")
    if word in _TENS:
        return "tens"
    if word == "hundred":
        return "hundred"
    return "scale" if word in _SCALES else None


# Which kind of number word may continue a spoken number ending in a given kind.
_CONTINUES = {"unit": {"hundred", "scale"}, "teen": {"hundred", "scale"},
              "tens": {"unit", "scale"}, "hundred": {"unit", "teen", "tens", "scale"},
              "scale": {"unit", "teen", "tens"}, "zero": set(), "and": {"unit", "teen", "tens"}}


def _can_follow(previous: str, word: str) -> bool:
    return _kind(word) in _CONTINUES["and" if previous == "and" else _kind(previous)]


def _spoken_value(run: list[str]) -> str:
    total, current = 0, 0
    for word in run:
        kind = _kind(word)
        if kind in ("unit", "teen", "zero"):
            current += _UNITS[word]
        elif kind == "tens":
            current += _TENS[word]
        elif kind == "hundred":
            current = max(current, 1) * 100
        elif kind == "scale":
            total += max(current, 1) * _SCALES[word]
            current = 0
    return str(total + current)


# ---------------------------------------------------------------------------------------------
# Metrics


@dataclass
class WerResult:
    wer: float  # (substitutions + deletions + insertions) / reference words
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_words: int
    normalized: bool

    def __str__(self) -> str:
        return (f"WER {100 * self.wer:.2f}% (S={self.substitutions} D={self.deletions} "
                f"I={self.insertions}, N={self.reference_words})")


def wer(references: Sequence[str], hypotheses: Sequence[str], normalize: bool = True) -> WerResult:
    """Corpus word error rate with jiwer, after :func:`normalize_english` unless told otherwise.
    An empty reference counts its hypothesis' words as insertions."""
    references, hypotheses = _paired(references, hypotheses)
    if normalize:
        references = [normalize_english(text) for text in references]
        hypotheses = [normalize_english(text) for text in hypotheses]
    counts = jiwer.process_words(references, hypotheses)
    reference_words = counts.hits + counts.substitutions + counts.deletions
    if reference_words == 0:
        raise ValueError("references have no words (after normalisation): WER is undefined")
    return WerResult(counts.wer, counts.substitutions, counts.deletions, counts.insertions,
                     counts.hits, reference_words, normalize)


def wer_by_group(references: Sequence[str], hypotheses: Sequence[str],
                 groups: Sequence[Optional[str]]) -> dict[str, WerResult]:
    """Corpus WER per group label (e.g. a test set's voice groups); samples labelled None are left out."""
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        if group is not None:
            members.setdefault(str(group), []).append(i)
    return {group: wer([references[i] for i in idx], [hypotheses[i] for i in idx])
            for group, idx in sorted(members.items())}


@dataclass
class PairedDifference:
    difference: float  # metric(a) - metric(b) on the whole set (WER as a fraction, BLEU in points)
    low: float  # 95% paired bootstrap interval of that difference
    high: float
    utterances: int
    resamples: int


@dataclass
class WerDifference(PairedDifference):
    # WER(a) / WER(b) - 1 with its 95% interval from the same resamples (targets are often relative);
    # None when b makes no errors
    relative: Optional[float] = None
    relative_low: Optional[float] = None
    relative_high: Optional[float] = None

    def __str__(self) -> str:
        return (f"WER difference {100 * self.difference:+.1f} points "
                f"[{100 * self.low:+.1f}, {100 * self.high:+.1f}] (95%, {self.resamples} resamples)")


class BleuDifference(PairedDifference):
    def __str__(self) -> str:
        return (f"BLEU difference {self.difference:+.2f} [{self.low:+.2f}, {self.high:+.2f}] "
                f"(95%, {self.resamples} resamples)")


def _resamples(count: int, resamples: int, seed: int) -> np.ndarray:
    """The paired bootstrap's resamples: ``resamples`` rows of ``count`` utterance indices."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, count, size=(resamples, count))


def wer_difference(references: Sequence[str], hypotheses_a: Sequence[str], hypotheses_b: Sequence[str],
                   resamples: int = 1000, seed: int = 0) -> WerDifference:
    """Corpus WER of ``hypotheses_a`` minus that of ``hypotheses_b`` on the same references, with a
    95% paired bootstrap interval (Bisani & Ney 2004): utterances are resampled with replacement and
    both systems are scored on each resample, so what the two get right or wrong together cancels.
    An interval that excludes 0 means the test set separates the two systems."""
    references, hypotheses_a = _paired(references, hypotheses_a)
    _, hypotheses_b = _paired(references, hypotheses_b)
    picks = _resamples(len(references), resamples, seed)
    words, errors_a = _utterance_errors(references, hypotheses_a)
    _, errors_b = _utterance_errors(references, hypotheses_b)
    if words.sum() == 0:
        raise ValueError("references have no words (after normalisation): WER is undefined")
    totals = np.maximum(words[picks].sum(axis=1), 1)  # a resample of empty references only: count errors
    sums_a, sums_b = errors_a[picks].sum(axis=1), errors_b[picks].sum(axis=1)
    low, high = np.percentile((sums_a - sums_b) / totals, [2.5, 97.5])
    relative = {}
    if errors_b.sum() > 0:  # same references, so the WER ratio is the error-count ratio
        ratios = np.where(sums_b > 0, sums_a / np.maximum(sums_b, 1) - 1, np.inf)
        relative_low, relative_high = np.percentile(ratios, [2.5, 97.5])
        relative = {"relative": float(errors_a.sum() / errors_b.sum() - 1), "relative_low": float(relative_low),
                    "relative_high": float(relative_high)}
    return WerDifference(float((errors_a.sum() - errors_b.sum()) / words.sum()), float(low), float(high),
                         len(words), resamples, **relative)


def _utterance_errors(references: list[str], hypotheses: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per utterance, after :func:`normalize_english`: reference words and word errors (S + D + I),
    from one jiwer alignment of the whole set, so their sums are the corpus counts of :func:`wer`."""
    alignment = jiwer.process_words([normalize_english(t) for t in references],
                                    [normalize_english(t) for t in hypotheses])
    words, errors = np.zeros(len(references), np.int64), np.zeros(len(references), np.int64)
    for i, chunks in enumerate(alignment.alignments):
        for chunk in chunks:
            reference_span = chunk.ref_end_idx - chunk.ref_start_idx
            words[i] += reference_span
            if chunk.type != "equal":
                errors[i] += max(reference_span, chunk.hyp_end_idx - chunk.hyp_start_idx)
    return words, errors


@dataclass
class BleuResult:
    score: float  # 0-100
    signature: str  # sacrebleu's, e.g. nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0
    detail: str  # n-gram precisions, brevity penalty, lengths

    def __str__(self) -> str:
        return f"BLEU {self.score:.2f} ({self.signature})"


def bleu(references: Sequence[str], hypotheses: Sequence[str], tokenize: str = "13a",
         lowercase: bool = False) -> BleuResult:
    """Corpus BLEU with sacrebleu against one reference per segment; quote the signature with
    the score. ``tokenize``: ``"13a"`` (default, WMT), ``"zh"``, ``"ja-mecab"``, ``"flores200"``..."""
    references, hypotheses = _paired(references, hypotheses)
    metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return BleuResult(result.score, str(metric.get_signature()), str(result))


def bleu_difference(references: Sequence[str], hypotheses_a: Sequence[str], hypotheses_b: Sequence[str],
                    resamples: int = 1000, seed: int = 0, tokenize: str = "13a") -> BleuDifference:
    """Corpus BLEU of ``hypotheses_a`` minus that of ``hypotheses_b`` (points) with a 95% paired
    bootstrap interval: segments resampled with replacement (the same resamples as
    :func:`wer_difference` for the same count and seed), both systems' corpus BLEU computed on each
    from sacrebleu's per-segment n-gram statistics, as sacrebleu's own paired bootstrap does."""
    references, hypotheses_a = _paired(references, hypotheses_a)
    _, hypotheses_b = _paired(references, hypotheses_b)
    picks = _resamples(len(references), resamples, seed)
    metric = BLEU(tokenize=tokenize)
    stats = [np.array(metric._extract_corpus_statistics(list(h), [references]), dtype=np.int64)
             for h in (hypotheses_a, hypotheses_b)]

    def score(rows: np.ndarray, which: int) -> float:
        return metric._compute_score_from_stats(stats[which][rows].sum(axis=0).tolist()).score

    everything = np.arange(len(references))
    differences = [score(row, 0) - score(row, 1) for row in picks]
    low, high = np.percentile(differences, [2.5, 97.5])
    return BleuDifference(score(everything, 0) - score(everything, 1), float(low), float(high),
                          len(references), resamples)


def _paired(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[list[str], list[str]]:
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("references and hypotheses must be sequences of strings, not one string")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no references to score")
    return list(references), list(hypotheses)


def audio_tokens_per_second(num_tokens: int | float, audio_seconds: float) -> float:
    """Audio tokens the LLM reads per second of audio (Whisper's encoder: 50; 4x pooling: 12.5).
    Pass totals over the test set."""
    return num_tokens / _positive(audio_seconds, "audio_seconds")


def real_time_factor(compute_seconds: float, audio_seconds: float) -> float:
    """Processing time divided by audio duration: below 1 is faster than real time."""
    return compute_seconds / _positive(audio_seconds, "audio_seconds")


def _positive(value: float, name: str) -> float:
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class EvalRow:
    name: str
    audio_tokens_per_second: float | None = None
    wer: WerResult | None = None
    bleu: BleuResult | None = None
    real_time_factor: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class EvalReport:
    """Results of several configurations (e.g. compression rates), saved as JSON and a table.

    >>> report = EvalReport("LibriSpeech test-clean, Whisper tiny.en + SmolLM2-135M")
    >>> report.add("uniform k=4", audio_tokens_per_second=12.5, wer=wer(refs, hyps), real_time_factor=0.08)
    >>> report.save("results/eval.json", "results/eval.md")
    """

    def __init__(self, title: str = "Evaluation"):
        self.title = title
        self.rows: list[EvalRow] = []

    def add(self, name: str, *, audio_tokens_per_second: float | None = None, wer: WerResult | None = None,
            bleu: BleuResult | None = None, real_time_factor: float | None = None, **extra: Any) -> EvalRow:
        row = EvalRow(name, audio_tokens_per_second, wer, bleu, real_time_factor, extra)
        self.rows.append(row)
        return row

    def to_dict(self) -> dict:
        return {"title": self.title, "rows": [asdict(row) for row in self.rows]}

    def to_markdown(self) -> str:
        extra_columns = list(dict.fromkeys(key for row in self.rows for key in row.extra))
        header = ["configuration", "audio tokens/s", "WER %", "BLEU", "RTF"] + extra_columns
        lines = [f"## {self.title}", "", _table_line(header), _table_line(["---"] * len(header))]
        for row in self.rows:
            cells = [row.name, _cell(row.audio_tokens_per_second, ".1f"),
                     _cell(row.wer and 100 * row.wer.wer, ".2f"), _cell(row.bleu and row.bleu.score, ".2f"),
                     _cell(row.real_time_factor, ".3f")] + [_cell(row.extra.get(key)) for key in extra_columns]
            lines.append(_table_line(cells))
        lines += self._notes()
        return "\n".join(lines) + "\n"

    def _notes(self) -> list[str]:
        notes = []
        if any(row.wer and row.wer.normalized for row in self.rows):
            notes.append("WER after Whisper-style English normalisation (lalm_fast.evaluate.normalize_english).")
        for signature in dict.fromkeys(row.bleu.signature for row in self.rows if row.bleu):
            notes.append(f"BLEU signature: `{signature}`")
        return [""] + notes if notes else []

    def save(self, json_path: str | os.PathLike, markdown_path: str | os.PathLike | None = None) -> None:
        """Write the JSON (and the markdown table), each atomically."""
        with atomic_write(json_path) as handle:
            json.dump(self.to_dict(), handle, indent=2)
            handle.write("\n")
        if markdown_path is not None:
            with atomic_write(markdown_path) as handle:
                handle.write(self.to_markdown())


def _cell(value: Any, spec: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, spec or ".4g")
    return str(value).replace("|", "\\|")


def _table_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
