"""S/D/I counts against hand-computed cases, an independent edit distance, and jiwer's own rates."""

from __future__ import annotations

import math

import jiwer
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unisono.eval.metrics import ErrorCounts, count_errors, difference_interval, total


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


def clips(errors: list[int], words: list[int]) -> list[ErrorCounts]:
    """Counts with the given errors (as substitutions) and reference lengths."""
    return [ErrorCounts(substitutions=e, hits=w - e) for e, w in zip(errors, words)]


def test_difference_interval_of_identical_systems_is_zero():
    a = clips([1, 0, 3, 2], [5, 4, 6, 7])
    assert difference_interval(a, a) == (0.0, 0.0)


def test_difference_interval_collapses_when_every_clip_moves_alike():
    # each clip loses one word in ten, so every resample of clips has a difference of exactly 0.1
    base = clips([0, 1, 2, 0], [10, 10, 10, 10])
    new = clips([1, 2, 3, 1], [10, 10, 10, 10])
    low, high = difference_interval(base, new)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)


def test_difference_interval_refuses_unpaired_counts():
    with pytest.raises(ValueError, match="paired"):
        difference_interval(clips([1], [3]), clips([1, 2], [3, 4]))


def paired_bootstrap_by_hand(base, new, words, resamples, rng):
    """The textbook loop, written apart from scipy: resample clips with replacement, pool, take percentiles."""
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, len(base), len(base))
        diffs.append((new[i].sum() - base[i].sum()) / words[i].sum())
    return np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)


def test_difference_interval_matches_a_hand_written_bootstrap_and_holds_the_estimate():
    rng = np.random.default_rng(3)
    words = rng.integers(3, 30, 45)
    base_e = rng.binomial(words, 0.3)
    new_e = rng.binomial(words, 0.38)
    base, new = clips(list(base_e), list(words)), clips(list(new_e), list(words))
    low, high = difference_interval(base, new, resamples=20000)
    ref_low, ref_high = paired_bootstrap_by_hand(base_e, new_e, words, 20000, np.random.default_rng(4))
    assert low == pytest.approx(ref_low, abs=0.004) and high == pytest.approx(ref_high, abs=0.004)
    point = total(new).rate - total(base).rate
    assert low < point < high
    # four times the clips, drawn alike: about half the width
    words4 = np.tile(words, 4)
    low4, high4 = difference_interval(clips(list(np.tile(base_e, 4)), list(words4)), clips(list(np.tile(new_e, 4)), list(words4)))
    assert 0.4 < (high4 - low4) / (high - low) < 0.6


def test_difference_interval_with_each_systems_own_references_matches_a_hand_written_bootstrap():
    # spoken replies: each system is scored against the reply it wrote, so the word counts differ
    rng = np.random.default_rng(5)
    base_words, new_words = rng.integers(3, 20, 40), rng.integers(3, 20, 40)
    base_e, new_e = rng.binomial(base_words, 0.5), rng.binomial(new_words, 0.3)
    base, new = clips(list(base_e), list(base_words)), clips(list(new_e), list(new_words))
    low, high = difference_interval(base, new, resamples=20000)
    diffs, hand = [], np.random.default_rng(6)
    for _ in range(20000):
        i = hand.integers(0, 40, 40)
        diffs.append(new_e[i].sum() / new_words[i].sum() - base_e[i].sum() / base_words[i].sum())
    assert low == pytest.approx(np.percentile(diffs, 2.5), abs=0.006)
    assert high == pytest.approx(np.percentile(diffs, 97.5), abs=0.006)
    assert low < total(new).rate - total(base).rate < high < 0
    # the same errors over other words is not "no difference"
    assert difference_interval(base, clips(list(base_e), list(base_words + 5))) != (0.0, 0.0)


def test_difference_interval_covers_the_true_gap_about_as_often_as_it_says():
    # sets of 50 clips from one population of clips, each clip with its own difficulty; a 95% interval
    # should hold the population's gap in roughly 95 of 100 sets
    rng = np.random.default_rng(0)
    difficulty = rng.beta(2, 5, 100_000)
    length = rng.integers(4, 30, 100_000)
    p_base, p_new = difficulty, np.clip(difficulty + 0.06, 0, 1)
    true_gap = ((p_new - p_base) * length).sum() / length.sum()
    held = 0
    for _ in range(200):
        i = rng.integers(0, len(length), 50)
        w = length[i]
        base, new = clips(list(rng.binomial(w, p_base[i])), list(w)), clips(list(rng.binomial(w, p_new[i])), list(w))
        low, high = difference_interval(base, new, resamples=1000)
        held += low <= true_gap <= high
    assert 176 <= held <= 198  # 95% of 200 is 190; a binomial spread either side, and the bootstrap runs a little narrow
