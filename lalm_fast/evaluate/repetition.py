"""A repetition guard for greedy transcripts: cut a hypothesis where it starts replaying itself.

Greedy decoders that lose track of the audio (a compressed model before adaptation, Whisper
with its padding masked, an under-trained audio LLM) often loop: "of the hearing of the hearing
of the hearing ..." or the whole sentence again, until the token limit. Each replayed word is an
insertion, so one loop can cost more WER than every other error of a test set together.

The guard is a rule on words, so every model (Whisper's tokenizer, an LLM's, a baseline) is
guarded the same way and stored hypotheses can be re-scored without decoding again: a hypothesis
is cut where it has replayed one whole ``period`` of its own words (``1 <= period <=
max_period``), and at least ``min_words`` words, keeping the first copy. Words are compared
without case or punctuation. Real text repeats phrases too, but then moves on: "holy, holy,
holy" replays fewer than five words, and parallelism ("a little while, and you will not see me;
again a little while, and you will see me") replays less than its period before it diverges.
A replay that is cut short by the token limit before it completes its period stays in.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from lalm_fast.evaluate.metrics import WerResult, wer, wer_by_group

__all__ = ["MIN_REPEATED_WORDS", "MAX_PERIOD_WORDS", "loop_start", "trim_repetition", "guarded_wer"]

MIN_REPEATED_WORDS = 5
MAX_PERIOD_WORDS = 40
_NOT_WORD = re.compile(r"[^\w']+")


def loop_start(keys: Sequence[str], min_words: int = MIN_REPEATED_WORDS,
               max_period: int = MAX_PERIOD_WORDS) -> Optional[int]:
    """Index of the first replayed word of the earliest loop in ``keys``, or None.

    A loop of ``period`` words is found at the first ``end`` where the last ``replay =
    max(min_words, period)`` words equal the ``replay`` words ``period`` earlier; the replay starts
    ``replay`` words before that end. The answer for a prefix never changes as words are appended,
    so the same rule could stop decoding early."""
    if min_words < 1 or max_period < 1:
        raise ValueError(f"min_words and max_period must be >= 1, got {min_words} and {max_period}")
    for end in range(min_words + 1, len(keys) + 1):
        for period in range(1, max_period + 1):
            replay = max(min_words, period)
            if end - replay - period < 0:
                break
            if keys[end - replay:end] == keys[end - replay - period:end - period]:
                return end - replay
    return None


def trim_repetition(text: str, min_words: int = MIN_REPEATED_WORDS, max_period: int = MAX_PERIOD_WORDS) -> str:
    """``text`` cut before its first replayed word (see :func:`loop_start`); unchanged without a loop."""
    words = text.split()
    keys = [_NOT_WORD.sub("", word.lower()) for word in words]
    start = loop_start(keys, min_words, max_period)
    return text if start is None else " ".join(words[:start])


def guarded_wer(references: Sequence[str], hypotheses: Sequence[str],
                groups: Optional[Sequence[Optional[str]]] = None) -> tuple[WerResult, dict[str, WerResult]]:
    """Corpus WER, and per group when ``groups`` is given, of the hypotheses after :func:`trim_repetition`."""
    trimmed = [trim_repetition(text) for text in hypotheses]
    by_group = wer_by_group(references, trimmed, groups) if groups is not None else {}
    return wer(references, trimmed), by_group
