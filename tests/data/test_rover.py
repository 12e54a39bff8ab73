import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from unisono.data.rover import align, normalize_tokens, rover, vote

# --- hand-made alignments -------------------------------------------------------------------


def test_substitution_and_insertion_are_aligned_by_hand():
    hyps = [["the", "cat", "sat"], ["the", "cat", "sat", "down"], ["a", "cat", "sat"]]
    slots = align(hyps)
    assert slots == [
        ("the", "the", "a"),
        ("cat", "cat", "cat"),
        ("sat", "sat", "sat"),
        (None, "down", None),
    ]
    r = rover(hyps)
    assert r.tokens == ["the", "cat", "sat"]  # "down" loses 1:2 to the null arcs
    assert r.votes == [2, 3, 3, 2]
    assert r.disagreement == pytest.approx(2 / 4)


def test_deletion_in_the_middle_gets_a_null_arc():
    hyps = [["i", "want", "to", "go", "home"], ["i", "want", "go", "home"], ["i", "want", "to", "go", "home"]]
    assert align(hyps) == [
        ("i", "i", "i"),
        ("want", "want", "want"),
        ("to", None, "to"),
        ("go", "go", "go"),
        ("home", "home", "home"),
    ]
    r = rover(hyps)
    assert r.text == "i want to go home"
    assert r.disagreement == pytest.approx(1 / 5)


def test_each_system_outvoted_in_a_different_slot():
    # every system makes one error, each in a different place: the vote repairs all three
    hyps = [["x", "b", "c", "d"], ["a", "y", "c", "d"], ["a", "b", "c", "z"]]
    r = rover(hyps)
    assert r.tokens == ["a", "b", "c", "d"]
    assert r.slots == [("x", "a", "a"), ("b", "y", "b"), ("c", "c", "c"), ("d", "d", "z")]
    assert r.disagreement == pytest.approx(3 / 4)


def test_tie_goes_to_the_first_listed_system():
    assert rover([["a"], ["b"], ["c"]]).tokens == ["a"]
    assert rover([["c"], ["b"], ["a"]]).tokens == ["c"]
    # weights break the tie the other way
    assert rover([["a"], ["b"], ["c"]], weights=[1.0, 1.5, 1.0]).tokens == ["b"]


def test_empty_hypotheses():
    r = rover([[], [], []])
    assert r.tokens == [] and r.disagreement == 0.0
    r = rover([["hello"], [], []])
    assert r.slots == [("hello", None, None)] and r.tokens == []


def test_vote_counts_null_arcs():
    tokens, counts = vote([("a", None, None), ("b", "b", None)])
    assert tokens == ["b"] and counts == [2, 2]


def test_chinese_is_voted_per_character():
    toks = [normalize_tokens(t, "zh") for t in ("今天 天气好", "今天天气好", "今天天汽好")]
    assert toks[0] == list("今天天气好")
    r = rover(toks)
    assert "".join(r.tokens) == "今天天气好"
    assert r.disagreement == pytest.approx(1 / 5)


def test_wrong_weight_count_is_refused():
    with pytest.raises(ValueError, match="2 weights for 3"):
        rover([["a"], ["a"], ["a"]], weights=[1, 1])


# --- properties -----------------------------------------------------------------------------

words = st.sampled_from(["a", "b", "c", "d", "e"])
hyp = st.lists(words, max_size=8)


@given(hyp)
def test_three_identical_inputs_fuse_to_themselves(h):
    r = rover([h, list(h), list(h)])
    assert r.tokens == h
    assert r.disagreement == 0.0
    assert all(v == 3 for v in r.votes)


@given(st.lists(hyp, min_size=2, max_size=4))
def test_every_hypothesis_is_a_column_of_the_network(hyps):
    slots = align(hyps)
    for i, h in enumerate(hyps):
        assert [s[i] for s in slots if s[i] is not None] == h
    assert all(any(e is not None for e in s) for s in slots)  # no all-null slot


@settings(max_examples=200)
@given(hyp, hyp, hyp)
def test_fusion_does_not_depend_on_system_order_without_tied_votes(h1, h2, h3):
    hyps = [h1, h2, h3]
    base = rover(hyps)
    # with three systems a slot is tied only when all three entries differ
    assume(all(len(set(s)) < 3 for s in base.slots))
    for perm in itertools.permutations(range(3)):
        r = rover([hyps[p] for p in perm])
        assert r.tokens == base.tokens
        assert r.disagreement == base.disagreement


@given(hyp, hyp)
def test_two_agreeing_systems_outvote_the_third(majority, odd):
    r = rover([odd, majority, list(majority)])
    assert r.tokens == majority
