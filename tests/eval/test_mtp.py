"""MTP analysis on a tiny random model and real clips: identity with greedy, consistent counts."""

from __future__ import annotations

import json
import math

import pytest
from tests.conftest import make_tiny_model

from unisono.audio.io import load_audio
from unisono.eval.mtp import MTPConfig, analyse_mtp


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer, seed=11)


@pytest.fixture(scope="module")
def clips(real_speech_dir):
    base = real_speech_dir / "an4_test"
    rows = [json.loads(line) for line in (base / "manifest.jsonl").read_text().splitlines()[3:5]]  # 2 short clips
    return [load_audio(base / r["audio"]) for r in rows]


@pytest.mark.slow
def test_analysis_counts_are_consistent(model, clips):
    results = analyse_mtp(model, clips, MTPConfig(drafts=[2, None], repeats=2, warmup=1, max_new_tokens=16))
    assert [r.n_drafts for r in results] == [2, 5]
    greedy_passes = {r.greedy_passes for r in results}
    assert len(greedy_passes) == 1  # every K is compared against the same greedy run
    for r in results:
        s = r.decode_stats
        assert r.identical  # verified decoding: MTP output is the greedy output
        assert r.clips == 2 and s.n_branches == r.n_drafts and len(s.accepted_hist) == r.n_drafts + 1
        assert r.mtp_passes <= r.greedy_passes and r.pass_reduction >= 1.0
        assert sum(s.accepted_hist) == r.mtp_passes - r.clips  # every pass after the prefill verifies drafts
        assert s.position_proposed[0] == sum(s.accepted_hist)  # ... and judges draft 1
        assert all(0.0 <= a <= 1.0 for a in s.acceptance_rate)
        assert s.position_accepted == sorted(s.position_accepted, reverse=True)  # draft i+1 only after draft i
        assert r.tokens <= r.clips + sum((k + 1) * c for k, c in enumerate(s.accepted_hist))
        assert len(r.greedy_repeat_seconds) == len(r.mtp_repeat_seconds) == 2
        assert r.speedup > 0 and math.isfinite(r.speedup)
        d = r.to_dict()
        assert d["acceptance_rate"] == s.acceptance_rate and d["speedup"] == r.speedup
    assert len({r.tokens for r in results}) == 1  # same text, same token count, whatever K


def test_bad_requests(model, clips, tiny_tokenizer):
    with pytest.raises(ValueError, match="1..5"):
        analyse_mtp(model, clips[:1], MTPConfig(drafts=[6], repeats=1, warmup=0, max_new_tokens=4))
    no_head = make_tiny_model(tiny_tokenizer, seed=1)
    no_head.mtp = None
    with pytest.raises(ValueError, match="no MTP head"):
        analyse_mtp(no_head, clips[:1], MTPConfig(repeats=1))
