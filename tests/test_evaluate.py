"""lalm_fast.evaluate against hand-computed values."""

import json
import random

import numpy as np
import pytest

from lalm_fast.evaluate import (EvalReport, audio_tokens_per_second, bleu, bleu_difference, normalize_english,
                                real_time_factor, wer, wer_difference)


@pytest.mark.parametrize("raw, normalized", [
    ("Hello, World!", "hello world"),
    ("I won't go; we're  [noise] there (laughs)", "i will not go we are there"),
    ("Uh, the café's well-known, um", "the cafe's well known"),
    ("Two hundred and five people, twenty-one cats", "205 people 21 cats"),
    ("one two three and five and six", "1 2 3 and 5 and 6"),  # digits said one by one stay apart
    ("It's 25% of 1,000 or 3.5 'quoted'", "it's 25 percent of 1000 or 3.5 quoted"),
    ("one million two hundred thousand and three", "1200003"),
])
def test_normalize_english(raw, normalized):
    assert normalize_english(raw) == normalized


def test_wer_one_substitution_in_four_words():
    result = wer(["the cat sat down"], ["the cat sat up"])
    assert result.wer == pytest.approx(0.25)
    assert (result.substitutions, result.deletions, result.insertions, result.hits) == (1, 0, 0, 3)
    assert result.reference_words == 4


def test_wer_normalises_unless_told_not_to():
    assert wer(["Hello, World!"], ["hello world"]).wer == 0.0
    assert wer(["Hello, World!"], ["hello world"], normalize=False).wer == 1.0


def test_wer_is_corpus_level_with_deletions_and_insertions():
    # 6 reference words: "a b c" vs "a c" (1 deletion); "d e f" vs "d e f g" (1 insertion).
    result = wer(["a b c", "d e f"], ["a c", "d e f g"], normalize=False)
    assert (result.deletions, result.insertions) == (1, 1)
    assert result.wer == pytest.approx(2 / 6)


def test_wer_bad_input():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no words"):
        wer(["[noise]"], ["hello"])
    with pytest.raises(TypeError, match="sequences of strings"):
        wer("a b", "a b")


def _edited(sentences: list[str], rate: float, rng: random.Random) -> list[str]:
    """Each word dropped, replaced or followed by an extra word with probability ``rate`` each."""
    edited = []
    for sentence in sentences:
        words = []
        for word in sentence.split():
            roll = rng.random()
            words += [] if roll < rate else ["zzz"] if roll < 2 * rate else [word, "yyy"] if roll < 3 * rate else [word]
        edited.append(" ".join(words))
    return edited


def _two_systems(seed: int, vocabulary: str, count: int, shortest: int, rates: tuple[float, float]):
    """Random references over ``vocabulary`` and two edited copies (the second with more errors)."""
    rng = random.Random(seed)
    references = [" ".join(rng.choices(vocabulary.split(), k=rng.randint(shortest, shortest + 11)))
                  for _ in range(count)]
    return references, _edited(references, rates[0], rng), _edited(references, rates[1], rng)


def _resampled(score, references, a, b, seed: int, resamples: int) -> list[tuple[float, float]]:
    """The paired bootstrap by hand: each resample's two sets scored by ``score`` itself."""
    picks = np.random.default_rng(seed).integers(0, len(references), size=(resamples, len(references)))
    return [(score([references[i] for i in row], [a[i] for i in row]),
             score([references[i] for i in row], [b[i] for i in row])) for row in picks]


def test_wer_difference_equals_resampling_whole_sets_through_wer():
    references, a, b = _two_systems(0, "the lord said to moses go and speak unto all people of israel", 40, 1,
                                    (0.05, 0.12))
    result = wer_difference(references, a, b, resamples=60, seed=3)
    assert result.difference == pytest.approx(wer(references, a).wer - wer(references, b).wer, abs=1e-12)
    pairs = _resampled(lambda r, h: wer(r, h).wer, references, a, b, seed=3, resamples=60)
    differences = [wa - wb for wa, wb in pairs]
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(differences, [2.5, 97.5])), abs=1e-12)
    assert result.relative == pytest.approx(wer(references, a).wer / wer(references, b).wer - 1, abs=1e-12)
    assert (result.relative_low, result.relative_high) == pytest.approx(
        tuple(np.percentile([wa / wb - 1 for wa, wb in pairs], [2.5, 97.5])), abs=1e-12)
    assert result.relative_low <= result.relative <= result.relative_high < 0  # a makes fewer errors
    assert result.low <= result.difference <= result.high and (result.utterances, result.resamples) == (40, 60)


def test_wer_difference_separates_a_better_system_and_not_an_equal_one():
    references = [f"verse number {i} says the same words again" for i in range(30)]
    dropped = [" ".join(r.split()[1:]) for r in references]  # one deletion in every utterance
    better = wer_difference(references, references, dropped)
    assert better.difference == pytest.approx(-1 / 8) and better.high < 0
    same = wer_difference(references, dropped, dropped)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    assert better.relative == -1.0 and wer_difference(references, dropped, references).relative is None  # b: no errors
    assert "-12.5 points" in str(better)


def test_wer_difference_bad_input():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer_difference(["a", "b"], ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        wer_difference(["a"], ["a"], ["a"], resamples=0)
    with pytest.raises(ValueError, match="no words"):
        wer_difference(["[noise]"], ["a"], ["b"])


def test_bleu_difference_equals_resampling_whole_sets_through_bleu():
    references, a, b = _two_systems(1, "y dijo jehová á moisés ve y habla á todo el pueblo de israel", 30, 3,
                                    (0.1, 0.3))
    result = bleu_difference(references, a, b, resamples=40, seed=5)
    assert result.difference == pytest.approx(bleu(references, a).score - bleu(references, b).score, abs=1e-9)
    # each resample's two corpora scored by bleu() itself (sacrebleu's corpus_score)
    differences = [sa - sb for sa, sb in _resampled(lambda r, h: bleu(r, h).score, references, a, b, seed=5,
                                                       resamples=40)]
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(differences, [2.5, 97.5])), abs=1e-9)
    assert result.low <= result.difference <= result.high and (result.utterances, result.resamples) == (30, 40)
    assert result.difference > 0 and str(result).startswith(f"BLEU difference {result.difference:+.2f} [")
    same = bleu_difference(references, a, a)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        bleu_difference(["a", "b"], ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        bleu_difference(["a"], ["a"], ["a"], resamples=0)


def test_bleu_identical_corpus_is_100_with_signature():
    corpus = ["the quick brown fox jumps over the lazy dog", "el perro duerme en la casa grande"]
    result = bleu(corpus, corpus)
    assert result.score == pytest.approx(100.0)
    assert result.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert str(result).startswith("BLEU 100.00 (nrefs:1")


def test_bleu_hand_computed():
    # hyp "a b c d" vs ref "a b c e": precisions 3/4, 2/3, 1/2, 0/1; exp smoothing turns the
    # zero 4-gram count into 1/(2*1). BP = 1. BLEU = (3/4 * 2/3 * 1/2 * 1/2) ** (1/4).
    result = bleu(["a b c e"], ["a b c d"])
    assert result.score == pytest.approx(100 * (3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25, abs=1e-2)


def test_rates():
    assert audio_tokens_per_second(1250, 100.0) == 12.5
    assert real_time_factor(3.0, 60.0) == 0.05
    with pytest.raises(ValueError, match="audio_seconds"):
        audio_tokens_per_second(10, 0.0)


def test_report_json_and_markdown(tmp_path):
    report = EvalReport("test-clean")
    report.add("whisper (no compression)", audio_tokens_per_second=50.0,
               wer=wer(["the cat sat down"], ["the cat sat down"]), real_time_factor=0.1234)
    report.add("uniform k=4", audio_tokens_per_second=12.5, wer=wer(["the cat sat down"], ["the cat sat up"]),
               bleu=bleu(["a b c d e"], ["a b c d e"]), steps=500)
    report.save(tmp_path / "eval.json", tmp_path / "eval.md")

    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["title"] == "test-clean"
    assert data["rows"][1]["wer"]["wer"] == 0.25 and data["rows"][1]["extra"] == {"steps": 500}
    assert data["rows"][1]["bleu"]["signature"].startswith("nrefs:1|")

    lines = (tmp_path / "eval.md").read_text().splitlines()
    assert lines[0] == "## test-clean"
    assert lines[2] == "| configuration | audio tokens/s | WER % | BLEU | RTF | steps |"
    assert lines[4] == "| whisper (no compression) | 50.0 | 0.00 | – | 0.123 | – |"
    assert lines[5] == "| uniform k=4 | 12.5 | 25.00 | 100.00 | – | 500 |"
    assert any(line.startswith("BLEU signature: `nrefs:1|") for line in lines)
    assert any("normalisation" in line for line in lines)
