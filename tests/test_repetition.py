"""The repetition guard shared by every model's transcripts (lalm_fast.evaluate.repetition)."""

import random

import pytest

from lalm_fast.evaluate.repetition import loop_start, trim_repetition

pytestmark = pytest.mark.unit

SENTENCE = "I had heard of you by the hearing of the ear, but now my eye sees you."


@pytest.mark.parametrize("text, expected", [
    ("of the hearing of the hearing of the hearing of the", "of the hearing"),
    ("and he said the the the the the the the the", "and he said the"),
    (f"{SENTENCE} {SENTENCE} {SENTENCE[:30]}", SENTENCE),          # the whole sentence again
    (f"{SENTENCE} {SENTENCE[:40]}", f"{SENTENCE} {SENTENCE[:40]}"),  # an unfinished replay stays
    ("Holy, holy, holy is the Lord", "Holy, holy, holy is the Lord"),   # a short real repeat stays
    (SENTENCE, SENTENCE),
    ("", ""),
    ("Of the HEARING, of the hearing; of the hearing.", "Of the HEARING,"),  # case and punctuation ignored
])
def test_trim_repetition(text, expected):
    assert trim_repetition(text) == expected


def test_four_replayed_words_are_not_a_loop():
    assert trim_repetition("a b c d a b c d") == "a b c d a b c d"
    assert trim_repetition("a b c d e a b c d e") == "a b c d e"


def test_period_longer_than_the_limit_is_kept():
    words = [f"w{i}" for i in range(45)]
    text = " ".join(words + words)
    assert trim_repetition(text, max_period=40) == text
    assert trim_repetition(text, max_period=45) == " ".join(words)


def test_the_cut_of_a_prefix_never_moves():
    """What makes the guard a stopping rule too: appending words never moves an earlier cut."""
    rng = random.Random(0)
    for _ in range(200):
        keys = [rng.choice("abc") for _ in range(rng.randint(0, 30))]
        start = loop_start(keys, 3, 6)
        for end in range(len(keys) + 1):
            prefix = loop_start(keys[:end], 3, 6)
            assert prefix is None or prefix == start


@pytest.mark.parametrize("kwargs", [{"min_words": 0}, {"max_period": 0}])
def test_bad_arguments_name_themselves(kwargs):
    with pytest.raises(ValueError, match="min_words and max_period"):
        loop_start(["a"], **kwargs)


@pytest.mark.parametrize("text", [
    "A little while, and you will not see me. Again a little while, and you will see me.",
    "You are right hand, Yahweh is glorious in power. You are right hand, Yahweh dashes the enemy in pieces.",
    "The sons of Shimei: Jahath, Zina. These four were the sons of Shimei.",
])
def test_parallelism_that_moves_on_is_not_a_loop(text):
    """Read text repeats phrases but diverges before replaying a whole period."""
    assert trim_repetition(text) == text
