"""S/D/I counts against hand-computed cases, an independent edit distance, and jiwer's own rates."""

from __future__ import annotations

import math

import jiwer
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unisono.eval.metrics import ErrorCounts, count_errors, total


def levenshtein(a: list[str], b: list[str]) -> int:
    """Plain dynamic-programming edit distance, written independently of jiwer."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@pytest.mark.parametrize("ref, hyp, s, d, i", [
    ("a b c d", "a x c d e", 1, 0, 1),  # one substitution, one insertion
    ("a b c d e", "a c d e", 0, 1, 0),  # one deletion
    ("a b", "a b", 0, 0, 0),
    ("a b c", "", 0, 3, 0),  # nothing recognised: all deletions
    ("", "a b", 0, 0, 2),  # nothing said: all insertions
])
def test_word_counts_by_hand(ref, hyp, s, d, i):
    c = count_errors(ref, hyp, "word")
    assert (c.substitutions, c.deletions, c.insertions) == (s, d, i)
    assert c.reference_length == len(ref.split())


def test_char_counts_by_hand():
    c = count_errors("其中有两个", "其中两个人", "char")  # 有 deleted, 人 inserted
    assert (c.substitutions, c.deletions, c.insertions, c.hits) == (0, 1, 1, 4)
    assert c.rate == pytest.approx(2 / 5)
    c = count_errors("abc", "abd", "char")
    assert (c.substitutions, c.deletions, c.insertions) == (1, 0, 0)


def test_rate_of_empty_reference():
    assert ErrorCounts().rate == 0.0
    assert math.isinf(count_errors("", "x", "word").rate)


def test_corpus_rate_is_pooled_not_averaged():
    # 1 error in 1 word, 0 errors in 9 words: pooled 10%, a mean of rates would say 50%
    counts = [count_errors("a", "b", "word"), count_errors("a b c d e f g h i", "a b c d e f g h i", "word")]
    assert total(counts).rate == pytest.approx(0.1)
    assert total(counts) == counts[0] + counts[1]


def test_unknown_unit_is_refused():
    with pytest.raises(ValueError, match="unit"):
        count_errors("a", "a", "phone")


words = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=8)


@settings(max_examples=60, deadline=None)
@given(ref=words.filter(bool), hyp=words)
def test_word_errors_equal_edit_distance_and_jiwer(ref, hyp):
    r, h = " ".join(ref), " ".join(hyp)
    c = count_errors(r, h, "word")
    assert c.errors == levenshtein(ref, hyp)
    assert c.reference_length == len(ref)
    assert c.rate == pytest.approx(jiwer.wer(r, h))


@settings(max_examples=60, deadline=None)
@given(ref=st.text(alphabet="语音识别ab", min_size=1, max_size=10), hyp=st.text(alphabet="语音识别ab", max_size=10))
def test_char_errors_equal_edit_distance_and_jiwer(ref, hyp):
    c = count_errors(ref, hyp, "char")
    assert c.errors == levenshtein(list(ref), list(hyp))
    assert c.rate == pytest.approx(jiwer.cer(ref, hyp))


def test_corpus_rate_matches_jiwer_on_lists():
    refs = ["the cat sat on the mat", "hello world", "one two three four"]
    hyps = ["the cat sit on mat", "hello there world", "one two three four"]
    assert total([count_errors(r, h, "word") for r, h in zip(refs, hyps)]).rate == pytest.approx(jiwer.wer(refs, hyps))


def test_counts_round_trip():
    c = ErrorCounts(1, 2, 3, 4)
    assert ErrorCounts.from_dict(c.to_dict()) == c
