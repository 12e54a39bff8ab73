"""Decode sessions: the same tokens as `generate`, MTP equal to greedy through appends, cancel, stops, masks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import make_tiny_model
from unisono.decode.generate import GenerationConfig, generate
from unisono.decode.sampling import RepetitionAwareConfig, SamplingConfig, choose_repetition_aware
from unisono.decode.session import CANCELLED, LENGTH, STOP, Session, SessionConfig

# no shrinking: each example decodes whole sequences, and a failure prints its inputs anyway
SLOW_SETTINGS = settings(max_examples=8, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
                         suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def model32(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer, "qwen3", seed=5)


@pytest.fixture(scope="module")
def model64(tiny_tokenizer):
    # float64 so that feeding 1 + K tokens at once or 1 at a time rounds alike
    return make_tiny_model(tiny_tokenizer, "qwen3", seed=11).double()


def embeds_of(model, ids: list[int]) -> torch.Tensor:
    return model.embed_tokens(torch.tensor([ids]))[0]  # (T, D)


def few_words(model, words: list[int]) -> torch.Tensor:
    """A handful of allowed tokens: random MTP branches then guess right often, and rows stop early."""
    allowed = torch.zeros(model.vocab.size, dtype=torch.bool)
    allowed[words] = True
    allowed[model.vocab.end_id] = True
    return allowed


def reference(model, prompt: list[int], max_new: int, allowed=None, sampling=None) -> list[int]:
    cfg = GenerationConfig(max_new_tokens=max_new, mtp=False, stop_ids=(model.vocab.end_id,),
                           sampling=sampling or SamplingConfig())
    emb = model.embed_tokens(torch.tensor([prompt]))
    return generate(model, emb, torch.ones(1, len(prompt), dtype=torch.bool), cfg, allowed=allowed).tokens[0]


def run_session(model, prompt: list[int], **kw) -> Session:
    s = Session(model, SessionConfig(stop_ids=(model.vocab.end_id,), **kw))
    s.prefill(embeds_of(model, prompt))
    list(s.tokens())
    return s


PROMPTS = st.lists(st.integers(0, 299), min_size=1, max_size=40)


@SLOW_SETTINGS
@given(prompt=PROMPTS, max_new=st.integers(1, 30))
def test_greedy_session_equals_generate(model32, prompt, max_new):
    s = run_session(model32, prompt, max_new_tokens=max_new, mtp=False)
    assert s.output == reference(model32, prompt, max_new)
    assert s.finish_reason in (STOP, LENGTH)
    assert (s.finish_reason == LENGTH) == (len(s.output) == max_new)


@SLOW_SETTINGS
@given(prompt=PROMPTS, seed=st.integers(0, 2**31), temperature=st.sampled_from([0.7, 1.0, 1.5]),
       top_k=st.sampled_from([0, 5, 50]), top_p=st.sampled_from([1.0, 0.9, 0.5]))
def test_seeded_sampling_session_equals_generate(model32, prompt, seed, temperature, top_k, top_p):
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    s = run_session(model32, prompt, max_new_tokens=20, sampling=sampling)
    assert s.K == 0  # sampling never drafts
    assert s.output == reference(model32, prompt, 20, sampling=sampling)


@SLOW_SETTINGS
@given(prompt=st.lists(st.integers(0, 299), min_size=1, max_size=120),
       words=st.lists(st.integers(0, 299), min_size=1, max_size=3, unique=True),
       max_new=st.sampled_from([8, 40]), n_drafts=st.sampled_from([1, 3, 5]))
def test_mtp_session_equals_greedy_with_long_prompts(model64, prompt, words, max_new, n_drafts):
    allowed = few_words(model64, words)
    fast = run_session(model64, prompt, max_new_tokens=max_new, allowed=allowed, n_drafts=n_drafts)
    assert fast.K == n_drafts
    assert fast.output == reference(model64, prompt, max_new, allowed=allowed)
    greedy = run_session(model64, prompt, max_new_tokens=max_new, allowed=allowed, mtp=False)
    assert fast.finish_reason == greedy.finish_reason
    assert fast.stats.passes <= greedy.stats.passes
    assert fast.stats.tokens == greedy.stats.tokens


@SLOW_SETTINGS
@given(prompt=st.lists(st.integers(0, 299), min_size=1, max_size=60),
       script=st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, None]), st.lists(st.integers(0, 299), min_size=1, max_size=30)),
                       min_size=1, max_size=4),
       words=st.lists(st.integers(0, 299), min_size=2, max_size=4, unique=True), n_drafts=st.sampled_from([1, 3, 5]))
def test_appends_between_steps_mtp_equals_greedy_equals_a_fresh_prefill(model64, prompt, script, words, n_drafts):
    """Steps (a few, or to the end: None) and appends interleaved. After each append a session goes on
    exactly as a new session prefilled with its whole context would; MTP and greedy sessions fed the
    same context emit the same tokens."""
    model, end = model64, model64.vocab.end_id
    allowed = few_words(model, words)
    cfg = dict(max_new_tokens=12, allowed=allowed)
    sessions = {"fast": Session(model, SessionConfig(stop_ids=(end,), n_drafts=n_drafts, **cfg)),
                "slow": Session(model, SessionConfig(stop_ids=(end,), mtp=False, **cfg))}
    context = {k: list(prompt) for k in sessions}  # token ids of everything each session was fed or emitted
    start = {k: 0 for k in sessions}
    for s in sessions.values():
        s.prefill(embeds_of(model, prompt))
    for n_steps, more in script:
        for k, s in sessions.items():
            if n_steps is None:
                list(s.tokens())
            for _ in range(n_steps or 0):
                s.step()
            context[k] += s.output[start[k]:] + ([end] if s.finish_reason == STOP else []) + more
            start[k] = len(s.output)
            first = s.append(embeds_of(model, more))
            fresh = Session(model, SessionConfig(stop_ids=(end,), mtp=False, **cfg))
            assert first == fresh.prefill(embeds_of(model, context[k]))
        if context["fast"] == context["slow"]:
            assert sessions["fast"].output == sessions["slow"].output
    for k, s in sessions.items():
        list(s.tokens())
        assert s.output[start[k]:] == run_session(model, context[k], mtp=False, **cfg).output
    if context["fast"] == context["slow"]:
        assert sessions["fast"].output == sessions["slow"].output


def test_tokens_iterator_and_callback_see_every_token_in_order(model32):
    seen = []
    s = Session(model32, SessionConfig(stop_ids=(model32.vocab.end_id,), max_new_tokens=15), on_token=seen.append)
    first = s.prefill(embeds_of(model32, [3, 4, 5]))
    assert first == seen[:1] and len(first) == 1  # the first token leaves with the prefill pass
    assert list(s.tokens()) == s.output == seen
    assert s.step() == []  # finished


def test_cancel_stops_decoding(model32):
    s = Session(model32, SessionConfig(stop_ids=(model32.vocab.end_id,), max_new_tokens=50, mtp=False))
    s.prefill(embeds_of(model32, [7, 8, 9]))
    s.step()
    n = len(s.output)
    s.cancel()
    assert s.finished and s.finish_reason == CANCELLED
    assert s.step() == [] and list(s.tokens()) == s.output and len(s.output) == n
    with pytest.raises(ValueError, match="cancelled"):
        s.append(embeds_of(model32, [1]))


def test_stop_token_ends_the_response_before_it(model32):
    prompt = [10, 11, 12]
    free = reference(model32, prompt, 12)
    assert len(free) == 12
    j = 5
    stop = free[j]
    first = free.index(stop)  # the first occurrence stops it
    s = Session(model32, SessionConfig(stop_ids=(stop,), max_new_tokens=12))
    s.prefill(embeds_of(model32, prompt))
    list(s.tokens())
    assert s.output == free[:first] and s.finish_reason == STOP


def test_max_new_tokens_is_per_response(model32):
    s = run_session(model32, [1, 2, 3], max_new_tokens=1)
    assert len(s.output) == 1 and s.finish_reason == LENGTH
    s.append(embeds_of(model32, [4, 5]))
    list(s.tokens())
    assert len(s.output) == 2


@SLOW_SETTINGS
@given(prompt=PROMPTS, words=st.lists(st.integers(0, 299), min_size=1, max_size=5, unique=True),
       sampled=st.booleans(), mtp=st.booleans())
def test_the_mask_constrains_every_token(model64, prompt, words, sampled, mtp):
    allowed = few_words(model64, words)
    sampling = SamplingConfig(temperature=1.0, seed=3) if sampled else SamplingConfig()
    s = run_session(model64, prompt, max_new_tokens=20, allowed=allowed, sampling=sampling, mtp=mtp)
    assert all(allowed[t] for t in s.output) and s.finish_reason in (STOP, LENGTH)
    assert all(t in words for t in s.output)


def test_repetition_aware_sampling_redraws_a_repeated_token():
    logits = torch.tensor([2.0, 0.0, 0.0, 0.0])
    nucleus = SamplingConfig(temperature=1.0, top_p=0.01)  # keeps only token 0
    ras = RepetitionAwareConfig(window=10, tau=0.1)
    g = torch.Generator().manual_seed(0)
    assert {choose_repetition_aware(logits, [1, 2, 3], nucleus, ras, g) for _ in range(50)} == {0}
    redrawn = [choose_repetition_aware(logits, [0, 1, 2], nucleus, ras, g) for _ in range(400)]
    p_other = 3 / (3 + torch.e**2)  # the full distribution gives 1, 2, 3 this much together
    assert abs(sum(t != 0 for t in redrawn) / 400 - p_other) < 0.07
    # an occurrence that slid out of the window no longer counts
    assert {choose_repetition_aware(logits, [0] + [1] * 10, nucleus, ras, g) for _ in range(50)} == {0}
    with pytest.raises(ValueError, match="window"):
        RepetitionAwareConfig(window=0)


def test_repetition_aware_session_is_seeded(model32):
    speech = torch.zeros(model32.vocab.size, dtype=torch.bool)
    speech[model32.vocab.speech_offset : model32.vocab.speech_offset + model32.vocab.n_speech] = True
    speech[model32.vocab.end_id] = True
    kw = dict(max_new_tokens=25, allowed=speech, sampling=SamplingConfig(temperature=1.0, top_k=5, seed=9),
              repetition=RepetitionAwareConfig())
    a, b = run_session(model32, [5, 6], **kw), run_session(model32, [5, 6], **kw)
    assert a.output == b.output and a.K == 0
    assert all(model32.vocab.is_speech(t) for t in a.output)


def test_errors_are_one_line(model32):
    end = model32.vocab.end_id
    with pytest.raises(ValueError, match="stop_ids"):
        SessionConfig()
    with pytest.raises(ValueError, match="max_new_tokens"):
        SessionConfig(stop_ids=(end,), max_new_tokens=0)
    with pytest.raises(ValueError, match="covers"):
        Session(model32, SessionConfig(stop_ids=(end,), allowed=torch.ones(5, dtype=torch.bool)))
    with pytest.raises(ValueError, match="n_drafts"):
        Session(model32, SessionConfig(stop_ids=(end,), n_drafts=99))
    s = Session(model32, SessionConfig(stop_ids=(end,)))
    with pytest.raises(ValueError, match="prefill"):
        s.step()
    with pytest.raises(ValueError, match="shape"):
        s.prefill(torch.zeros(3, 7))
    with pytest.raises(ValueError, match="shape"):
        s.prefill(torch.zeros(0, model32.config.decoder.hidden_size))
    s.prefill(embeds_of(model32, [1]))
    with pytest.raises(ValueError, match="already prefilled"):
        s.prefill(embeds_of(model32, [1]))
