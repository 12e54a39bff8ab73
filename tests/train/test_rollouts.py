"""Rollouts: rewards measured per candidate, adherence within a prompt, one pair a prompt, a clean resume."""

from __future__ import annotations

import json
import math

import pytest

from unisono.eval.tts import TTSPrompt
from unisono.train.rollouts import (RewardWeights, RolloutConfig, add_adherence, pair_of, read_rollouts, rollouts,
                                    total_reward)


def test_adherence_is_relative_to_the_prompts_own_candidates():
    rewards = [{"delivery": {"rate": r, "f0_median_hz": f}} for r, f in ((2.0, 100.0), (3.0, 200.0), (4.0, None))]
    add_adherence(TTSPrompt("a", "x", asked={"rate": "slow"}), rewards)
    assert [r["adherence"] for r in rewards] == pytest.approx([-math.log(2 / 3), 0.0, -math.log(4 / 3)])
    add_adherence(TTSPrompt("a", "x", asked={"pitch": "high"}), rewards)  # median of the voiced: 150 Hz
    assert rewards[0]["adherence"] == pytest.approx(12 * math.log2(100 / 150) / 2)
    assert rewards[2]["adherence"] == -1.0  # nothing voiced: the worst
    add_adherence(TTSPrompt("a", "x"), rewards)
    assert all(r["adherence"] == 0.0 for r in rewards)


def test_the_pair_is_the_best_and_the_worst_when_apart_by_the_margin():
    parts = {"intelligibility": -0.5, "similarity": 0.8, "dnsmos": 3.0, "adherence": 0.2, "length": -1.0}
    assert total_reward(parts, RewardWeights()) == pytest.approx(-0.5 + 0.4 + 0.75 + 0.1 - 1.0)
    row = {"prompt": {"id": "p", "text": "t"}, "model": "m", "recognizer": "r",
           "candidates": [{"seed": s, "tokens": [s], "rewards": {}, "total": t} for s, t in ((0, 0.3), (1, 0.9), (2, 0.1), (3, 0.9))]}
    pair = pair_of(row, margin=0.5)
    assert pair["chosen"] == [1] and pair["rejected"] == [2] and pair["margin"] == pytest.approx(0.8)  # ties: lower seed
    assert pair["seeds"] == [1, 2] and pair_of(row, margin=0.81) is None


def test_a_torn_last_line_is_cut_off(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text('{"prompt": {"id": "a"}}\n{"prompt": {"id": "b"}}\n{"prompt": {"id"')
    assert [r["prompt"]["id"] for r in read_rollouts(path)] == ["a", "b"]
    assert path.read_text().endswith('"b"}}\n')


@pytest.mark.slow
def test_rollouts_score_every_candidate_and_resume_without_duplicates(tmp_path):
    from unisono.model.unisono import Unisono
    from unisono.peers.recognizers import build_recognizer

    model = Unisono.load()
    whisper = build_recognizer("faster-whisper", threads=2)
    prompts = [TTSPrompt("a", "The cat sat on the mat."), TTSPrompt("b", "We went home early.")]
    config = RolloutConfig(candidates=2, dnsmos=False, margin=0.0)
    pairs = rollouts(model, "unisono", prompts[:1], tmp_path, config, {"en": whisper}, similarity=None)
    rows = read_rollouts(tmp_path / "rollouts.jsonl")
    assert len(rows) == 1 and [c["seed"] for c in rows[0]["candidates"]] == [0, 1]
    for c in rows[0]["candidates"]:
        r = c["rewards"]
        assert c["tokens"] and r["intelligibility"] == pytest.approx(-min(r["error_rate"], 2.0), abs=1e-4)
        assert c["total"] == pytest.approx(total_reward(r, config.weights), abs=1e-3)
    assert len(pairs) == 1 and pairs[0]["id"] == "a"
    with open(tmp_path / "rollouts.jsonl", "a") as f:  # a run killed while writing prompt b
        f.write('{"prompt": {"id": "b", "te')
    pairs = rollouts(model, "unisono", prompts, tmp_path, config, {"en": whisper}, similarity=None)
    rows = read_rollouts(tmp_path / "rollouts.jsonl")
    assert [r["prompt"]["id"] for r in rows] == ["a", "b"] and [p["id"] for p in pairs] == ["a", "b"]
    assert [json.loads(line)["id"] for line in (tmp_path / "pairs.jsonl").read_text().splitlines()] == ["a", "b"]
    with pytest.raises(ValueError, match="one sentence"):
        rollouts(model, "unisono", [TTSPrompt("c", "One. Two.")], tmp_path, config, {"en": whisper}, similarity=None)
    with pytest.raises(ValueError, match="at least 2"):
        RolloutConfig(candidates=1)


def test_prompts_are_one_sentence_and_keep_out_what_is_excluded():
    from unisono.train.rollouts import make_prompts

    rows = [{"text": f"This is plain sentence number {i} here.", "language": "en"} for i in range(40)]
    rows += [{"text": "Two sentences. Not one.", "language": "en"}, {"text": "Too short.", "language": "en"},
             {"text": "今天天气很好，我们去公园散步吧。", "language": "zh"}]
    held_out = {rows[0]["text"], rows[1]["text"]}
    made = make_prompts(rows, 30, seed=3, instructed=0.5, exclude=held_out)
    plain = [p for p in made if "asked" not in p]
    assert len(plain) == 30 and len({p["text"] for p in plain}) == 30
    assert not {p["text"] for p in made} & (held_out | {"Two sentences. Not one.", "Too short."})
    twins = [p for p in made if "asked" in p]
    assert twins and all(next(q for q in plain if q["id"] == t["pair_of"])["text"] == t["text"] for t in twins)
    assert made == make_prompts(rows, 30, seed=3, instructed=0.5, exclude=held_out)  # the seed decides
    assert [p["language"] for p in make_prompts(rows, 1, languages=("zh",), min_words=1)] == ["zh"]
    with pytest.raises(ValueError, match="only 38 usable"):
        make_prompts(rows, 39, exclude=held_out)
