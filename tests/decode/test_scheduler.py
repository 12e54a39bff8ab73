"""Continuous batching: every request gets exactly the tokens its session gives alone."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import make_tiny_model
from unisono.decode.sampling import SamplingConfig
from unisono.decode.scheduler import Scheduler, SchedulerConfig
from unisono.decode.session import CANCELLED, ERROR, Session, SessionConfig

SETTINGS = settings(max_examples=4, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    # float64: a row decoded in a padded batch rounds like the row alone
    return make_tiny_model(tiny_tokenizer, "qwen3", seed=11).double()


def embeds_of(model, ids):
    return model.embed_tokens(torch.tensor([ids]))[0]


def config_for(model, kind: str, words: list[int], max_new: int, seed: int = 0) -> SessionConfig:
    allowed = torch.zeros(model.vocab.size, dtype=torch.bool)
    allowed[words] = True
    allowed[model.vocab.end_id] = True
    kw = dict(stop_ids=(model.vocab.end_id,), max_new_tokens=max_new, allowed=allowed)
    if kind == "greedy":
        return SessionConfig(mtp=False, **kw)
    if kind.startswith("mtp"):
        return SessionConfig(n_drafts=int(kind[3:]), **kw)
    return SessionConfig(sampling=SamplingConfig(temperature=1.0, top_k=3, seed=seed), **kw)


def alone(model, prompt, config) -> list[int]:
    s = Session(model, config)
    s.prefill(embeds_of(model, prompt))
    return list(s.tokens())


REQUESTS = st.lists(
    st.tuples(st.lists(st.integers(0, 299), min_size=1, max_size=50),  # prompt
              st.sampled_from(["greedy", "mtp1", "mtp3", "sampled"]),
              st.lists(st.integers(0, 299), min_size=2, max_size=4, unique=True),  # allowed words
              st.sampled_from([4, 12, 24])),  # max_new_tokens
    min_size=1, max_size=6)


@SETTINGS
@given(requests=REQUESTS, late=st.integers(0, 6), steps_before=st.integers(0, 5))
def test_concurrent_requests_give_the_tokens_each_gives_alone(model, requests, late, steps_before):
    """Requests of mixed settings and prompt lengths; some join while the others are mid-flight."""
    configs = [config_for(model, kind, words, max_new, seed=i) for i, (_, kind, words, max_new) in enumerate(requests)]
    scheduler = Scheduler(model, SchedulerConfig(max_batch=16))
    first, second = requests[:late], requests[late:]
    handles = [scheduler.submit(embeds_of(model, p), configs[i]) for i, (p, *_) in enumerate(first)]
    for _ in range(steps_before):
        scheduler.step()
    handles += [scheduler.submit(embeds_of(model, p), configs[len(first) + i]) for i, (p, *_) in enumerate(second)]
    scheduler.run_until_idle()
    for h, (prompt, *_), cfg in zip(handles, requests, configs):
        assert h.done and h.error is None
        assert h.result() == alone(model, prompt, cfg)
    if len(requests) > 1:  # one pass served several requests
        assert scheduler.steps < sum(len(h.output) for h in handles) + len(handles)


def test_cancel_mid_flight_ends_only_that_request(model):
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13], [1, 2]]
    cfgs = [config_for(model, "greedy", [41, 278, 100], 30), config_for(model, "mtp3", [41, 278], 30),
            config_for(model, "greedy", [7, 8, 9], 30)]
    scheduler = Scheduler(model)
    handles = [scheduler.submit(embeds_of(model, p), c) for p, c in zip(prompts, cfgs)]
    for _ in range(3):
        scheduler.step()
    handles[1].cancel()
    scheduler.run_until_idle()
    full = alone(model, prompts[1], cfgs[1])
    assert handles[1].finish_reason == CANCELLED
    assert handles[1].output == full[: len(handles[1].output)] and len(handles[1].output) < len(full)
    for i in (0, 2):
        assert handles[i].result() == alone(model, prompts[i], cfgs[i])


def test_a_failing_request_does_not_affect_the_others(model):
    prompts = [[5, 6, 7], [9, 10, 11, 12], [1, 2, 3, 4, 5, 6]]
    cfgs = [config_for(model, "mtp1", [41, 278, 100], 20), config_for(model, "greedy", [41, 100], 20),
            config_for(model, "sampled", [3, 4, 5], 20, seed=4)]
    cfgs[1].allowed[model.vocab.end_id] = False  # it cannot stop before its callback fails
    scheduler = Scheduler(model)
    seen = []

    def breaks_at_the_third(token):
        seen.append(token)
        if len(seen) == 3:
            raise RuntimeError("client went away")

    handles = [scheduler.submit(embeds_of(model, prompts[0]), cfgs[0]),
               scheduler.submit(embeds_of(model, prompts[1]), cfgs[1], on_token=breaks_at_the_third),
               scheduler.submit(embeds_of(model, prompts[2]), cfgs[2])]
    with pytest.raises(ValueError, match="shape"):  # bad input is refused at once
        scheduler.submit(torch.zeros(4, 3), cfgs[0])
    scheduler.run_until_idle()
    assert handles[1].finish_reason == ERROR and "client went away" in handles[1].error
    assert len(handles[1].output) == 3 and scheduler.steps > 3  # it failed mid-flight, the others went on
    for i in (0, 2):
        assert handles[i].error is None and handles[i].result() == alone(model, prompts[i], cfgs[i])


def test_batch_size_and_token_budget_bound_each_step(model):
    prompts = [[i, i + 1, i + 2, i + 3] for i in range(10, 16)]
    cfg = config_for(model, "greedy", [41, 278, 100], 12)
    scheduler = Scheduler(model, SchedulerConfig(max_batch=3, max_batch_tokens=12))
    handles = [scheduler.submit(embeds_of(model, p), cfg) for p in prompts]
    peak = 0
    while scheduler.step():
        assert scheduler.running <= 3
        peak = max(peak, scheduler.running)
    assert peak >= 2  # a prompt costs 4 + 1 tokens: two fit the budget of 12 in one step
    for h, p in zip(handles, prompts):
        assert h.result() == alone(model, p, cfg)


def test_background_thread_serves_threads_and_asyncio(model):
    prompts = [[5, 6, 7], [20, 21], [30, 31, 32, 33], [1]]
    cfgs = [config_for(model, k, [41, 278, 100], 16) for k in ("greedy", "mtp1", "mtp3", "greedy")]
    results: dict[int, list[int]] = {}
    with Scheduler(model) as scheduler:
        def client(i):
            results[i] = list(scheduler.submit(embeds_of(model, prompts[i]), cfgs[i]).tokens(timeout=60))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        async def async_client():
            return [t async for t in scheduler.submit(embeds_of(model, prompts[3]), cfgs[3]).stream()]

        results[3] = asyncio.run(async_client())
    for i in range(4):
        assert results[i] == alone(model, prompts[i], cfgs[i])


def test_compaction_keeps_the_tokens(model):
    prompts = [[5, 6, 7, 8, 9, 10, 11, 12], [20, 21]]
    cfgs = [config_for(model, "mtp3", [41, 278, 100, 7], 40), config_for(model, "sampled", [41, 278], 40, seed=2)]
    scheduler = Scheduler(model, SchedulerConfig(compact_ratio=0.05))  # pack after nearly every step
    handles = [scheduler.submit(embeds_of(model, p), c) for p, c in zip(prompts, cfgs)]
    scheduler.run_until_idle()
    for h, p, c in zip(handles, prompts, cfgs):
        assert h.result() == alone(model, p, c)


def test_config_errors():
    with pytest.raises(ValueError, match="max_batch"):
        SchedulerConfig(max_batch=0)
    with pytest.raises(ValueError, match="compact_ratio"):
        SchedulerConfig(compact_ratio=0)
