"""The synthetic speech corpora: an English ASR set and an English-speech -> Spanish-text
translation (ST) set, spoken by espeak-ng and Piper, from the verse-aligned Bibles.

``build_corpora(out_dir, n_train=..., n_test=..., seed=...)`` writes::

    out_dir/asr_train.jsonl  asr_test.jsonl     text = the English verse, lang "en"
    out_dir/st_train.jsonl   st_test.jsonl      text = English verse, translation = Spanish, lang "en-es"
    out_dir/audio/{train,test}/<verse>-<digest>.wav   16 kHz mono 16-bit
    out_dir/dataset.json                        counts, hours, seeds, held-out rules, tool versions

Manifests are in the repo's format (:mod:`lalm_fast.data.manifest`); each line's extra keys
hold the utterance's ``voice`` settings and ``voice_group``.

What the test sets hold out
---------------------------
* **Sentences.** A sentence is a test sentence when sha256 of its normalised English text
  (:func:`lalm_fast.evaluate.normalize_english`) falls in the first ``test_fraction`` (10%) of
  the hash range (:func:`is_test_sentence`). The rule looks at the text only - not the seed, the
  sizes or the verse number - so the test sentences are the same in every build, verses that
  read the same (the Bible repeats itself) always fall on the same side, and no test sentence is
  in any training manifest, ASR or ST. Sentences are deduplicated by normalised text, and ASR
  and ST use disjoint sentences: in a seeded shuffle the verse pairs are dealt alternately to
  ASR and ST, and English verses without a usable Spanish side (the deuterocanon, verses the
  alignment dropped) go to ASR only. Not held out: near-duplicates that differ in wording
  (parallel passages such as 2 Samuel 22 / Psalm 18) can straddle the split.
* **Voices.** Training speech is ~80% espeak-ng from a training pool (6 accents x 10
  variants, 140-180 words/min, pitch 35-65) and ~20% Piper (length_scale 0.9-1.1). Each test
  set has three voice groups, reported separately:
  ``espeak_seen`` (40%): training-pool voices, so only the sentence is new;
  ``espeak_unseen`` (40%): accent/variant combinations training never uses (held-out accents
  ``en-029`` and ``en-gb-x-gbcwmd`` with any variant, or a training accent with a held-out
  variant ``m6 m7 f4 f5``), at held-out speeds (120-134 or 186-200 words/min) and pitches
  (20-29 or 71-80);
  ``piper`` (20%): the Piper voice at held-out speeds (length_scale 0.8-0.87 or 1.13-1.2).
  With ``piper_train_fraction=0`` the Piper voice itself is held out (test only).

Clips longer than ``max_seconds`` (the encoder window a training run will use) are not put in a
manifest; the next candidate sentence takes the slot, so the sizes asked for are met.
Rebuilding into the same folder keeps every valid WAV already there (file names carry a digest
of text and voice), so an interrupted build resumes and a finished one rebuilds in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from lalm_fast.data import synth
from lalm_fast.data.errors import DataError
from lalm_fast.data.files import atomic_write
from lalm_fast.data.manifest import Utterance, write_manifest
from lalm_fast.data.synth import SynthJob, Voice

DATASET_FORMAT = 1
SPLIT_SALT = "lalm-fast-split-v1"
SIZES = {"quick": {"n_train": 400, "n_test": 100}, "full": {"n_train": 5000, "n_test": 400}}
TASKS = {"asr": "en", "st": "en-es"}
SPLITS = ("train", "test")
TRAIN_GROUPS = {"espeak": synth.ESPEAK_TRAIN, "piper": synth.PIPER_TRAIN}
TEST_GROUPS = {"espeak_seen": synth.ESPEAK_TRAIN, "espeak_unseen": synth.ESPEAK_UNSEEN, "piper": synth.PIPER_UNSEEN}
DEFAULT_TEST_WEIGHTS = {"espeak_seen": 0.4, "espeak_unseen": 0.4, "piper": 0.2}


@dataclass(frozen=True)
class Sentence:
    id: str  # verse id, e.g. "John.3.16"
    en: str
    es: str | None = None  # None: no usable Spanish side (ASR only)


# ---------------------------------------------------------------------------------------------
# Sentences


def is_test_sentence(text: str, test_fraction: float = 0.1) -> bool:
    """The held-out rule: sha256 of the normalised English text, read as a fraction of the hash
    range, below ``test_fraction``. Depends on nothing but the text."""
    from lalm_fast.evaluate import normalize_english

    return synth.stable_int(f"{SPLIT_SALT}|{normalize_english(text)}") / 2.0**64 < test_fraction


def sentence_pools(sentences: Iterable[Sentence], *, seed: int = 0,
                   test_fraction: float = 0.1) -> dict[tuple[str, str], list[Sentence]]:
    """Candidate sentences of each (task, split), in the seeded order they are used.

    Sentences are deduplicated by normalised English (the first kept; put those with a Spanish
    side first to keep it), split by :func:`is_test_sentence`, shuffled with ``seed``, then
    dealt: sentences with Spanish alternately to ASR and ST, the others to ASR.
    """
    from lalm_fast.evaluate import normalize_english

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    unique, seen = [], set()
    for sentence in sentences:
        key = normalize_english(sentence.en)
        if key and key not in seen:
            seen.add(key)
            unique.append(sentence)
    pools: dict[tuple[str, str], list[Sentence]] = {(task, split): [] for task in TASKS for split in SPLITS}
    for split in SPLITS:
        chosen = [s for s in unique if is_test_sentence(s.en, test_fraction) == (split == "test")]
        order = sorted(chosen, key=lambda s: synth.stable_int(f"order|{seed}|{split}|{s.id}"))
        paired = 0
        for sentence in order:
            if sentence.es:
                pools[("asr" if paired % 2 == 0 else "st", split)].append(sentence)
                paired += 1
            else:
                pools[("asr", split)].append(sentence)
    return pools


def bible_sentences(sword_path=None, *, min_words: int = 4, max_words: int = 20,
                    max_length_ratio: float | None = 2.5) -> tuple[list[Sentence], dict]:
    """Aligned verse pairs (first) and English-only verses, each with ``min_words`` to
    ``max_words`` English words, and a description of the source for dataset.json."""
    from lalm_fast.data import bible

    english = bible.read_bible(bible.ENGLISH_MODULE, sword_path)
    spanish = bible.read_bible(bible.SPANISH_MODULE, sword_path)
    pairs = bible.filter_pairs(bible.align_verses(english, spanish), min_words, max_words, max_length_ratio)
    paired_ids = {pair.id for pair in pairs}
    sentences = [Sentence(pair.id, pair.en, pair.es) for pair in pairs]
    english_only = [Sentence(bible.verse_id(key), text) for key, text in english.items()
                    if bible.verse_id(key) not in paired_ids and min_words <= len(text.split()) <= max_words]
    source = {"english": f"{bible.ENGLISH_MODULE} (World English Bible)",
              "spanish": f"{bible.SPANISH_MODULE} (Reina-Valera 1909)",
              "module_versions": bible.module_versions(sword_path), "verses_en": len(english),
              "verses_es": len(spanish), "aligned_pairs_kept": len(pairs), "english_only_kept": len(english_only),
              "english_words": [min_words, max_words], "max_length_ratio": max_length_ratio}
    return sentences + english_only, source


# ---------------------------------------------------------------------------------------------
# Voice groups


def interleave(weights: dict[str, float], n: int) -> list[str]:
    """``n`` group names in a smooth weighted round robin: group g gets round(w_g * n) slots
    (largest remainder), spread evenly, the same every time."""
    total = sum(weights.values())
    if n < 0 or total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"need n >= 0 and non-negative weights with a positive sum, got {weights}, n={n}")
    shares = {g: w / total for g, w in weights.items() if w > 0}
    counts = Counter()
    order = []
    for i in range(n):
        group = max(shares, key=lambda g: (shares[g] * (i + 1) - counts[g], shares[g]))
        counts[group] += 1
        order.append(group)
    return order


def _group_weights(split: str, piper: bool, piper_train_fraction: float,
                   test_weights: dict[str, float]) -> dict[str, float]:
    if split == "train":
        weights = {"espeak": 1 - piper_train_fraction, "piper": piper_train_fraction}
    else:
        weights = dict(test_weights)
    if not piper:
        weights.pop("piper", None)
    return {g: w for g, w in weights.items() if w > 0}


# ---------------------------------------------------------------------------------------------
# Building


@dataclass
class _Slot:
    task: str
    split: str
    group: str
    sentence: Sentence | None = None
    voice: Voice | None = None
    job: SynthJob | None = None
    duration: float | None = None


def build_corpora(out_dir: str | os.PathLike, *, n_train: int, n_test: int, seed: int = 0,
                  min_words: int = 4, max_words: int = 20, max_seconds: float = 10.0,
                  test_fraction: float = 0.1, piper: bool | None = None, piper_train_fraction: float = 0.2,
                  test_weights: dict[str, float] | None = None, workers: int | None = None,
                  progress: bool = True, sword_path=None, sentences: Sequence[Sentence] | None = None,
                  prune: bool = False) -> dict:
    """Build the ASR and ST corpora (``n_train`` / ``n_test`` utterances per task) into
    ``out_dir``; returns the description also written to ``out_dir/dataset.json``.

    ``piper``: None uses Piper when installed (and records why not otherwise), True requires it,
    False leaves it out. ``sentences`` replaces the Bibles (tests). ``prune`` deletes WAV files
    in ``out_dir/audio`` that no manifest uses (left by a build with other settings).
    Raises :class:`lalm_fast.data.bible.BibleMissingError` or
    :class:`lalm_fast.data.synth.SynthesisError` (naming the install command) when a needed
    tool is missing, and ValueError when the pools are too small for the sizes asked.
    """
    out_dir = Path(out_dir)
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train}, {n_test}")
    if not 0 <= piper_train_fraction <= 1:
        raise ValueError(f"piper_train_fraction must be in [0, 1], got {piper_train_fraction}")
    test_weights = dict(DEFAULT_TEST_WEIGHTS if test_weights is None else test_weights)
    unknown = set(test_weights) - set(TEST_GROUPS)
    if unknown:
        raise ValueError(f"unknown test voice group(s) {sorted(unknown)}; known: {sorted(TEST_GROUPS)}")

    piper_reason = synth.piper_unavailable()
    if piper and piper_reason:
        raise synth.SynthesisError("piper", "missing", piper_reason)
    use_piper = piper_reason is None if piper is None else bool(piper)
    synth.check_espeak_voices([synth.ESPEAK_TRAIN, synth.ESPEAK_UNSEEN])

    start = time.perf_counter()
    if sentences is None:
        sentences, source = bible_sentences(sword_path, min_words=min_words, max_words=max_words)
    else:
        sentences = [s for s in sentences if min_words <= len(s.en.split()) <= max_words]
        source = {"sentences": "given by the caller", "count": len(sentences), "english_words": [min_words, max_words]}
    pools = sentence_pools(sentences, seed=seed, test_fraction=test_fraction)
    sizes = {"train": n_train, "test": n_test}
    for (task, split), pool in pools.items():
        if sizes[split] > len(pool):
            raise ValueError(f"{task} {split}: {sizes[split]} utterances asked but only {len(pool)} candidate "
                             f"sentences (after the {min_words}-{max_words} word filter and the split)")

    slots: list[_Slot] = []
    for task in TASKS:
        for split in SPLITS:
            weights = _group_weights(split, use_piper, piper_train_fraction, test_weights)
            slots += [_Slot(task, split, group) for group in interleave(weights, sizes[split])]
    candidates = {key: iter(pool) for key, pool in pools.items()}

    dropped = Counter()
    failures: list[str] = []
    shortfall = Counter()
    synth_seconds, statuses = 0.0, Counter()
    render_seconds, rendered_audio = Counter(), Counter()  # per engine, files written in this run
    pending = list(slots)
    round_number = 0
    while pending:
        round_number += 1
        jobs = []
        for slot in pending:
            slot.sentence = next(candidates[(slot.task, slot.split)], None)
            if slot.sentence is None:
                shortfall[f"{slot.task}_{slot.split}"] += 1
                continue
            pool = (TRAIN_GROUPS if slot.split == "train" else TEST_GROUPS)[slot.group]
            slot.voice = synth.voice_for(f"{slot.task}|{slot.split}|{slot.group}|{slot.sentence.id}", seed, pool)
            name = synth.audio_name(slot.sentence.id, slot.sentence.en, slot.voice)
            slot.job = SynthJob(slot.sentence.id, slot.sentence.en, slot.voice, out_dir / "audio" / slot.split / name)
            jobs.append(slot)
        t0 = time.perf_counter()
        results = synth.synthesize([slot.job for slot in jobs], workers=workers, progress=progress,
                                   desc="synthesising" if round_number == 1 else f"replacing ({round_number})")
        synth_seconds += time.perf_counter() - t0
        pending = []
        for slot, result in zip(jobs, results):
            statuses[result.status] += 1
            if result.status == "written":
                render_seconds[slot.voice.engine] += result.seconds
                rendered_audio[slot.voice.engine] += result.duration
            if result.status == "failed":
                dropped["failed"] += 1
                if len(failures) < 10:
                    failures.append(f"{slot.sentence.id}: {result.error}")
                pending.append(slot)
            elif result.duration > max_seconds:
                dropped["too_long"] += 1
                pending.append(slot)
            else:
                slot.duration = result.duration

    filled = [slot for slot in slots if slot.duration is not None]
    sets = {}
    for task, lang in TASKS.items():
        for split in SPLITS:
            chosen = [slot for slot in filled if slot.task == task and slot.split == split]
            utterances = [Utterance(audio=slot.job.path, text=slot.sentence.en, id=slot.sentence.id,
                                    translation=slot.sentence.es if task == "st" else None, lang=lang,
                                    duration=round(slot.duration, 4),
                                    extra={"voice": slot.voice.to_dict(), "voice_group": slot.group})
                          for slot in chosen]
            manifest = out_dir / f"{task}_{split}.jsonl"
            write_manifest(manifest, utterances)
            groups = Counter(slot.group for slot in chosen)
            sets[f"{task}_{split}"] = {
                "manifest": manifest.name, "utterances": len(chosen),
                "hours": round(sum(slot.duration for slot in chosen) / 3600, 4),
                "voice_groups": {g: {"utterances": groups[g],
                                     "hours": round(sum(s.duration for s in chosen if s.group == g) / 3600, 4)}
                                 for g in sorted(groups)},
                "sentence_pool": len(pools[(task, split)])}

    referenced = {slot.job.path.resolve() for slot in filled}
    stale = [path for path in (out_dir / "audio").rglob("*.wav") if path.resolve() not in referenced]
    if prune:
        for path in stale:
            path.unlink(missing_ok=True)

    description = {
        "format": DATASET_FORMAT,
        "built_by": "lalm_fast.data.corpora.build_corpora",
        "seed": seed, "n_train": n_train, "n_test": n_test, "sample_rate": synth.SAMPLE_RATE,
        "max_seconds": max_seconds,
        "sets": sets,
        "total_utterances": len(filled),
        "total_hours": round(sum(slot.duration for slot in filled) / 3600, 4),
        "sentences": dict(source, test_fraction=test_fraction, split_rule=(
            f"test iff int(sha256('{SPLIT_SALT}|' + normalize_english(english))[:8 bytes]) / 2**64 < {test_fraction}; "
            "deduplicated by normalised English; ASR and ST disjoint (pairs dealt alternately in a seeded "
            "shuffle, English-only verses to ASR)")),
        "voices": {
            "train": {"espeak": synth.ESPEAK_TRAIN.describe(), "piper": synth.PIPER_TRAIN.describe(),
                      "weights": _group_weights("train", use_piper, piper_train_fraction, test_weights)},
            "test": {"espeak_seen": synth.ESPEAK_TRAIN.describe(), "espeak_unseen": synth.ESPEAK_UNSEEN.describe(),
                     "piper": synth.PIPER_UNSEEN.describe(),
                     "weights": _group_weights("test", use_piper, piper_train_fraction, test_weights)},
            "held_out": {"accents": list(synth.ESPEAK_ACCENTS_HELD_OUT),
                         "variants": list(synth.ESPEAK_VARIANTS_HELD_OUT),
                         "espeak_speed_wpm": [list(r) for r in synth.SPEEDS_HELD_OUT],
                         "espeak_pitch": [list(r) for r in synth.PITCHES_HELD_OUT],
                         "piper_length_scale": [list(r) for r in synth.LENGTH_SCALES_HELD_OUT]},
            "piper": {"used": use_piper, "reason": None if use_piper else (piper_reason or "disabled (piper=False)")},
        },
        "dropped": {"too_long": dropped["too_long"], "failed": dropped["failed"], "failures": failures},
        "shortfall": dict(shortfall),
        "files": {"written": statuses["written"], "kept": statuses["kept"], "unused": 0 if prune else len(stale),
                  "pruned": len(stale) if prune else 0},
        "tools": dict(synth.tool_versions(), python=sys.version.split()[0]),
        "build_seconds": round(time.perf_counter() - start, 1),
        "synthesis_seconds": round(synth_seconds, 1),
        "render": {engine: {"seconds": round(render_seconds[engine], 1),
                            "audio_hours": round(rendered_audio[engine] / 3600, 4),
                            "real_time_factor": round(render_seconds[engine] / rendered_audio[engine], 4)}
                   for engine in sorted(render_seconds) if rendered_audio[engine] > 0},
        "workers": workers or synth.usable_cores(),
    }
    with atomic_write(out_dir / "dataset.json") as handle:
        json.dump(description, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    return description


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lalm_fast.data.corpora",
                                     description="Build the synthetic ASR and EN->ES speech translation corpora.")
    parser.add_argument("out_dir")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help=f"{SIZES['quick']} per task (default)")
    size.add_argument("--full", action="store_true", help=f"{SIZES['full']} per task")
    parser.add_argument("--n-train", type=int)
    parser.add_argument("--n-test", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--no-piper", action="store_true")
    parser.add_argument("--prune", action="store_true")
    args = parser.parse_args(argv)
    sizes = dict(SIZES["full" if args.full else "quick"])
    if args.n_train is not None:
        sizes["n_train"] = args.n_train
    if args.n_test is not None:
        sizes["n_test"] = args.n_test
    try:
        description = build_corpora(args.out_dir, **sizes, seed=args.seed, max_seconds=args.max_seconds,
                                    workers=args.workers, piper=False if args.no_piper else None, prune=args.prune)
    except (DataError, ValueError) as error:  # missing tool (with its install command) or bad sizes
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, info in description["sets"].items():
        print(f"{name:10s} {info['utterances']:6d} utterances {info['hours']:7.3f} h  {info['voice_groups']}")
    print(f"total {description['total_hours']:.3f} h; synthesis {description['synthesis_seconds']:.1f} s; "
          f"build {description['build_seconds']:.1f} s; dropped {description['dropped']['too_long']} too long, "
          f"{description['dropped']['failed']} failed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
