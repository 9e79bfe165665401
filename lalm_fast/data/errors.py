"""Bad-data errors and the skip counter used when a run is told to skip bad utterances."""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field


class DataError(ValueError):
    """A problem with one input file or utterance. ``path`` names the file, ``reason`` is a short
    stable code (used to count skips), the message says what was expected."""

    def __init__(self, path: str | os.PathLike, reason: str, message: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {message}")


class ManifestError(DataError):
    """A manifest, transcript or TSV file that cannot be parsed."""


class AudioError(DataError):
    """An audio file that is missing, unreadable, empty, at the wrong rate or too long."""


class TranscriptError(DataError):
    """An utterance whose transcript (or translation) is empty."""


@dataclass
class SkipReport:
    """Counts utterances skipped under ``skip_bad=True``, by reason, with the first few files."""

    counts: collections.Counter = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 10

    def add(self, error: DataError) -> None:
        self.counts[error.reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        if not self.total:
            return "no utterances skipped"
        by_reason = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts.items()))
        lines = [f"skipped {self.total} utterance(s) ({by_reason})"]
        lines += [f"  {example}" for example in self.examples]
        return "\n".join(lines)
