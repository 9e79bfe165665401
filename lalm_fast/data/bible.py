"""Verse-aligned English and Spanish Bibles: the sentence source of the synthetic corpora.

The World English Bible (SWORD module ``engWEB2015eb``) and the Reina-Valera 1909
(``spaRV1909eb``) are public domain and install offline with Debian's ``sword-text-web`` and
``sword-text-sparv``; ``pysword`` reads them from ``/usr/share/sword``. The modules are OSIS
XML: words in ``<w lemma=...>`` tags, footnotes inline as ``<note>...</note>``. Stripping tags
alone (or pysword's own ``clean=True``) glues the word before a footnote to the word after it
(John 3:16 comes out as "his only bornSon"), so a note becomes a space first, then the other
tags go. ``<speaker>`` labels (the "Beloved" / "Friends" headings of the Song of Songs) are
dropped with their content too: they are not read aloud and the Spanish text has none. Psalm
titles stay: both translations carry them in verse 1.

Verses are aligned by (book, chapter, verse). The modules declare different versifications
(NRSVA and KJV) and, more to the point, the Spanish text follows the Hebrew numbering in a few
passages (Numbers 13, 1 Samuel 24, Jonah 2, ...), where verse n of one text is verse n +- 1 of
the other: :func:`shifted_verses` finds those from verse lengths and leaves them out, and a
per-pair length-ratio filter drops verses that one translation merges into its neighbour. The
English deuterocanon has no Spanish side and is not in the pairs (:func:`read_bible` still
returns it).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from lalm_fast.data.errors import DataError

ENGLISH_MODULE = "engWEB2015eb"
SPANISH_MODULE = "spaRV1909eb"
DEFAULT_SWORD_PATH = "/usr/share/sword"
APT_INSTALL = "apt-get install -y sword-text-web sword-text-sparv"
PIP_INSTALL = "pip install pysword"

VerseKey = tuple[str, int, int]  # (OSIS book name, chapter, verse)


class BibleMissingError(DataError):
    """pysword or a SWORD module is not installed; the message names the install command."""

    def __init__(self, path: str | os.PathLike, message: str):
        super().__init__(path, "missing", message)


@dataclass(frozen=True)
class VersePair:
    """One aligned verse. ``id`` is ``"<OSIS book>.<chapter>.<verse>"``, e.g. ``"John.3.16"``."""

    book: str
    chapter: int
    verse: int
    en: str
    es: str

    @property
    def id(self) -> str:
        return verse_id((self.book, self.chapter, self.verse))

    @property
    def en_words(self) -> int:
        return len(self.en.split())


def verse_id(key: VerseKey) -> str:
    book, chapter, verse = key
    return f"{book}.{chapter}.{verse}"


# ---------------------------------------------------------------------------------------------
# OSIS text

_NOTE = re.compile(r"<note\b[^>]*?(?:/>|>.*?</note\s*>)", re.DOTALL | re.IGNORECASE)
_SPEAKER = re.compile(r"<speaker\b[^>]*>.*?</speaker\s*>", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?])")


def strip_osis(text: str) -> str:
    """Plain text of one OSIS verse: each ``<note>`` (with its content) and ``<speaker>`` label
    becomes a space, every other tag is removed (its content kept), whitespace is collapsed.

    >>> strip_osis('<w>only born</w><note placement="foot">3:16 Greek</note><w>Son</w>, that')
    'only born Son, that'
    """
    text = _NOTE.sub(" ", text)
    text = _SPEAKER.sub(" ", text)
    text = _TAG.sub("", text)
    text = _SPACE.sub(" ", text.replace("\u00a0", " ")).strip()
    # a note between a word and its comma leaves "word ," behind
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)


# ---------------------------------------------------------------------------------------------
# Reading the modules


def sword_path(path: str | os.PathLike | None = None) -> Path:
    """The SWORD folder: ``path``, else ``$SWORD_PATH``, else ``/usr/share/sword``."""
    return Path(path or os.environ.get("SWORD_PATH") or DEFAULT_SWORD_PATH)


def bibles_available(path: str | os.PathLike | None = None) -> str | None:
    """None when pysword and both modules are installed, else the reason (with the install
    command). Cheap: looks for the files, reads nothing."""
    try:
        _check_installed(sword_path(path), (ENGLISH_MODULE, SPANISH_MODULE))
    except BibleMissingError as error:
        return str(error)
    return None


def _check_installed(root: Path, modules: Iterable[str]) -> None:
    if importlib.util.find_spec("pysword") is None:
        raise BibleMissingError("pysword", f"the pysword package is not installed; install it with: {PIP_INSTALL}")
    for module in modules:
        if _conf_file(root, module) is None:
            raise BibleMissingError(root, f"SWORD module {module} not found under {root} "
                                          f"(no mods.d/{module}.conf); install it as root with: {APT_INSTALL}")


def _conf_file(root: Path, module: str) -> Path | None:
    for name in (module, module.lower()):  # Debian keeps the module's case; SWORD's tools lower it
        if (root / "mods.d" / f"{name}.conf").is_file():
            return root / "mods.d" / f"{name}.conf"
    return None


def read_bible(module: str, path: str | os.PathLike | None = None) -> dict[VerseKey, str]:
    """Every non-empty verse of a SWORD Bible module as plain text (see :func:`strip_osis`),
    keyed by (OSIS book, chapter, verse), in canonical order. Takes a few seconds."""
    root = sword_path(path)
    _check_installed(root, (module,))
    from pysword.modules import SwordModules

    modules = SwordModules(str(root))
    found = modules.parse_modules()
    if module not in found:
        raise BibleMissingError(root, f"SWORD module {module} is not listed by pysword under {root}; "
                                      f"install it as root with: {APT_INSTALL}")
    bible = modules.get_bible_from_module(module)
    _cache_blocks(bible)
    verses: dict[VerseKey, str] = {}
    for books in bible.get_structure().get_books().values():
        for book in books:
            for chapter, length in enumerate(book.chapter_lengths, start=1):
                for number, raw in enumerate(_chapter_texts(bible, book.osis_name, chapter, length), start=1):
                    text = strip_osis(raw or "")
                    if text:
                        verses[(book.osis_name, chapter, number)] = text
    return verses


def _chapter_texts(bible, book: str, chapter: int, length: int) -> list[str]:
    texts = list(bible.get_iter(books=book, chapters=chapter, clean=False))
    if len(texts) == length:
        return texts
    # pysword skips unreadable verses in a range, which would shift the numbering: go one by one
    return [bible.get(books=book, chapters=chapter, verses=verse, clean=False) for verse in range(1, length + 1)]


def _cache_blocks(bible) -> None:
    """pysword decompresses a whole book block for every verse it returns (~40 s for a Bible);
    remembering the last few blocks makes a full read take a few seconds. Skipped quietly if a
    pysword version lacks the (private) method: reading stays correct, only slower."""
    method = getattr(bible, "_decompressed_text", None)
    if callable(method):
        bible._decompressed_text = functools.lru_cache(maxsize=4)(method)


# ---------------------------------------------------------------------------------------------
# Aligning and filtering


def align_verses(english: Mapping[VerseKey, str], spanish: Mapping[VerseKey, str], *,
                 drop_shifted: bool = True) -> list[VersePair]:
    """Pairs of verses present (and non-empty) in both, in the English order.

    With ``drop_shifted`` (default) a verse is left out where the two texts number it
    differently: where, in a window of 7 verses around it, the Spanish lengths fit the English
    ones better one verse earlier or later than at the same number (see :func:`shifted_verses`).
    """
    shifted = shifted_verses(english, spanish) if drop_shifted else set()
    return [VersePair(*key, en=text, es=spanish[key])
            for key, text in english.items() if text and spanish.get(key) and key not in shifted]


def shifted_verses(english: Mapping[VerseKey, str], spanish: Mapping[VerseKey, str], *,
                   radius: int = 3, margin: float = 0.1) -> set[VerseKey]:
    """Verses whose numbering differs between the two texts, found from lengths alone (as
    Gale and Church align sentences).

    The translations number a few passages differently (Numbers 13 and 30, 1 Samuel 24,
    Jonah 2, ...: the Spanish follows the Hebrew numbering there), so verse n of one is verse
    n +- 1 of the other. For each verse, the mean |log(Spanish chars / (c * English chars))|
    over the verses within ``radius`` (same chapter) is computed at offset 0 and at +-1, with
    ``c`` the corpus-wide length ratio; the verse is flagged when a shifted offset fits better
    by more than ``margin``. On WEB / RV1909 this flags ~160 verses, nearly all in ~10 chapters
    with a known numbering difference.
    """
    common = [key for key in english if english[key] and spanish.get(key)]
    if not common:
        return set()
    ratio = sum(len(spanish[key]) for key in common) / max(1, sum(len(english[key]) for key in common))

    def cost(key: VerseKey, offset: int) -> float | None:
        book, chapter, verse = key
        en, es = english.get(key), spanish.get((book, chapter, verse + offset))
        if not en or not es:
            return None
        return abs(math.log(len(es) / (ratio * len(en))))

    def window(key: VerseKey, offset: int) -> float | None:
        book, chapter, verse = key
        costs = [c for j in range(-radius, radius + 1)
                 if (c := cost((book, chapter, verse + j), offset)) is not None]
        return sum(costs) / len(costs) if len(costs) >= 3 else None

    flagged = set()
    for key in common:
        aligned = window(key, 0)
        shifted = [c for c in (window(key, -1), window(key, 1)) if c is not None]
        if aligned is not None and shifted and aligned > min(shifted) + margin:
            flagged.add(key)
    return flagged


def filter_pairs(pairs: Iterable[VersePair], min_words: int = 4, max_words: int = 20,
                 max_length_ratio: float | None = 2.5) -> list[VersePair]:
    """Keep pairs whose English side has ``min_words``..``max_words`` words (whitespace split) and,
    unless ``max_length_ratio`` is None, whose Spanish/English word-count ratio lies within
    ``[1 / max_length_ratio, max_length_ratio]`` (drops versification mismatches and verses
    that one translation merges into its neighbour)."""
    if min_words < 1 or max_words < min_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}")
    if max_length_ratio is not None and max_length_ratio < 1:
        raise ValueError(f"max_length_ratio must be >= 1 or None, got {max_length_ratio}")
    kept = []
    for pair in pairs:
        words = pair.en_words
        if not min_words <= words <= max_words:
            continue
        if max_length_ratio is not None:
            ratio = len(pair.es.split()) / words
            if not 1 / max_length_ratio <= ratio <= max_length_ratio:
                continue
        kept.append(pair)
    return kept


def load_verse_pairs(path: str | os.PathLike | None = None, *, min_words: int = 4, max_words: int = 20,
                     max_length_ratio: float | None = 2.5) -> list[VersePair]:
    """The aligned, filtered English-Spanish verse pairs (WEB and RV1909), in canonical order.

    Raises :class:`BibleMissingError` naming the install command when pysword or a module is
    missing."""
    root = sword_path(path)
    _check_installed(root, (ENGLISH_MODULE, SPANISH_MODULE))
    pairs = align_verses(read_bible(ENGLISH_MODULE, root), read_bible(SPANISH_MODULE, root))
    return filter_pairs(pairs, min_words, max_words, max_length_ratio)


def module_versions(path: str | os.PathLike | None = None) -> dict[str, str]:
    """``{module: version}`` from the modules' .conf files (for a dataset description)."""
    root = sword_path(path)
    versions = {}
    for module in (ENGLISH_MODULE, SPANISH_MODULE):
        conf = _conf_file(root, module)
        if conf is not None:
            match = re.search(r"^Version=(.*)$", conf.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
            versions[module] = match.group(1).strip() if match else "unknown"
    return versions
