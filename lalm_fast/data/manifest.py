"""Utterance lists: the JSONL manifest format and readers for LibriSpeech and CoVoST-2.

A manifest has one JSON object per line::

    {"id": "1272-128104-0000", "audio": "dev-clean/1272/128104/1272-128104-0000.flac",
     "text": "MISTER QUILTER IS ...", "translation": null, "lang": "en", "duration": 5.86}

``audio`` and ``text`` are required; ``id`` defaults to the audio file's stem; ``translation``,
``lang`` (free-form: ``"en"`` for ASR, ``"en-de"`` for a translation pair) and ``duration``
(seconds, lets batching skip opening every file) are optional; any other keys are kept in
``Utterance.extra`` and written back. Relative ``audio`` paths are relative to the manifest's
folder, so a dataset folder can be moved or shared as a whole.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from lalm_fast.data.errors import ManifestError
from lalm_fast.data.files import atomic_write

_KNOWN_KEYS = ("id", "audio", "text", "translation", "lang", "duration")


@dataclass
class Utterance:
    audio: Path
    text: str
    id: str = ""
    translation: str | None = None
    lang: str | None = None
    duration: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.audio = Path(self.audio)
        if not self.id:
            self.id = self.audio.stem


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Read a JSONL manifest; blank lines are ignored, a bad line raises naming file and line."""
    path = Path(path)
    utterances = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    utterances.append(_parse_line(path, line_number, line))
    except UnicodeDecodeError:
        raise ManifestError(path, "bad_manifest", "not UTF-8 text (a binary file?)") from None
    return utterances


def _parse_line(path: Path, line_number: int, line: str) -> Utterance:
    where = f"{path}:{line_number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(where, "bad_manifest", f"not valid JSON ({exc.msg})") from None
    if not (isinstance(record, dict) and isinstance(record.get("audio"), str)
            and isinstance(record.get("text"), str)):
        raise ManifestError(where, "bad_manifest", 'expected a JSON object with "audio" and "text" strings')
    known = {key: record[key] for key in _KNOWN_KEYS if key in record}
    known["audio"] = _absolute(path.parent / known["audio"])  # an absolute path stays as it is
    extra = {key: value for key, value in record.items() if key not in _KNOWN_KEYS}
    return Utterance(**known, extra=extra)


def write_manifest(path: str | os.PathLike, utterances: Iterable[Utterance]) -> None:
    """Write a JSONL manifest atomically. Audio paths under the manifest's folder are written
    relative to it; others stay absolute."""
    path = Path(path)
    root = _absolute(path.parent)
    with atomic_write(path) as handle:
        for utt in utterances:
            handle.write(json.dumps(_to_record(utt, root), ensure_ascii=False) + "\n")


def _to_record(utt: Utterance, root: Path) -> dict:
    audio = _absolute(utt.audio)
    if audio.is_relative_to(root):
        audio = audio.relative_to(root)
    record = {"id": utt.id, "audio": audio.as_posix(), "text": utt.text}
    optional = {"translation": utt.translation, "lang": utt.lang, "duration": utt.duration}
    record.update({key: value for key, value in optional.items() if value is not None})
    record.update(utt.extra)
    return record


def _absolute(path: Path) -> Path:
    # abspath, not resolve(): a symlinked dataset folder keeps the paths the user gave it
    return Path(os.path.abspath(path))


def read_librispeech(root: str | os.PathLike, audio_ext: str = ".flac") -> list[Utterance]:
    """Read a LibriSpeech split folder (``<root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt``,
    each line ``<utterance id> <TRANSCRIPT>``, audio beside it as ``<utterance id>.flac``).

    Transcripts are kept as LibriSpeech writes them (upper case); evaluation normalises.
    Utterances come sorted by id so every run sees the same order.
    """
    root = Path(root)
    transcripts = sorted(root.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise ManifestError(root, "bad_manifest", "no <speaker>/<chapter>/*.trans.txt files found")
    utterances = []
    for transcript in transcripts:
        utterances += _read_trans_txt(transcript, audio_ext)
    return sorted(utterances, key=lambda utt: utt.id)


def _read_trans_txt(transcript: Path, audio_ext: str) -> list[Utterance]:
    utterances = []
    with open(transcript, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                utt_id, _, text = line.strip().partition(" ")
                audio = transcript.parent / f"{utt_id}{audio_ext}"
                utterances.append(Utterance(audio=audio, text=text.strip(), id=utt_id, lang="en"))
    return utterances


_COVOST_COLUMNS = ("path", "sentence", "translation")
_COVOST_NAME = re.compile(r"covost_v2\.(?P<src>[a-z\-]+)_(?P<tgt>[a-z\-]+)\.")


def read_covost_tsv(tsv: str | os.PathLike, clips_dir: str | os.PathLike,
                    lang: str | None = None) -> list[Utterance]:
    """Read a CoVoST-2 TSV (columns ``path``, ``sentence``, ``translation``, ``client_id``) whose
    clips live in ``clips_dir`` (Common Voice's ``clips/``).

    Quoting is off (csv.QUOTE_NONE), as in the official loader: transcripts contain bare quotes.
    ``lang`` defaults to the pair in the file name (``covost_v2.en_de.dev.tsv`` -> ``"en-de"``).
    ``client_id`` (the speaker) is kept in ``extra["speaker"]``.
    """
    tsv, clips_dir = Path(tsv), Path(clips_dir)
    lang = lang or _covost_lang(tsv)
    with open(tsv, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [column for column in _COVOST_COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise ManifestError(tsv, "bad_manifest", f"missing column(s) {missing}; "
                                f"expected {list(_COVOST_COLUMNS)} (+ client_id)")
        return [_covost_utterance(row, clips_dir, lang, f"{tsv}:{reader.line_num}") for row in reader]


def _covost_utterance(row: dict, clips_dir: Path, lang: str | None, where: str) -> Utterance:
    if not row["path"]:
        raise ManifestError(where, "bad_manifest", "row has no clip path")
    extra = {"speaker": row["client_id"]} if row.get("client_id") else {}
    return Utterance(audio=clips_dir / row["path"], text=row["sentence"] or "",
                     translation=row["translation"] or "", lang=lang, extra=extra)


def _covost_lang(tsv: Path) -> str | None:
    match = _COVOST_NAME.search(tsv.name)
    return f"{match['src']}-{match['tgt']}" if match else None
