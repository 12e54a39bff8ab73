"""Dialogue preference data from a judge: replies sampled from the chat mode's prompt, scored,
paired best against worst; a killed run resumes; DPO runs on the pairs."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest

from unisono.train.chat_rollouts import (ChatRolloutConfig, answer_reward, chat_prompts, chat_rollouts,
                                         length_reward)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")


class LengthJudge:
    """Stands in for the LLM judge (tested in tests/eval/test_judge.py): longer replies score higher."""

    source = "length-judge"

    def __call__(self, reply, dialogue, persona=None):
        from unisono.eval.judge import Judgement

        return Judgement("", None, "no critique", expected=1 + min(len(reply), 80) / 20)


@pytest.fixture(scope="module")
def model():
    from unisono.model.unisono import Unisono

    return Unisono.load()


def test_length_reward():
    assert length_reward("", 30) == -1.0 and length_reward("a few words", 30) == 0
    assert length_reward(" ".join(["w"] * 40), 30) == pytest.approx(-0.5)


def test_answer_reward_follows_the_evaluations_check():
    woman = {"expect": ["woman", "female"], "options": ["woman", "female", "man", "male"], "language": "en"}
    assert answer_reward("A woman, I think.", woman) == 1.0
    assert answer_reward("A man or a woman.", woman) == 0.0  # both named: no answer
    assert answer_reward("Hello there.", woman) == 0.0
    assert answer_reward("I live in Oslo.", {"expect": ["Oslo"], "options": []}) == 1.0
    assert answer_reward("I live in Oslofjord.", {"expect": ["Oslo"], "options": []}) == 0.0
    assert answer_reward("Anything.", {"expect": [], "options": []}) is None


@needs_espeak
def test_replies_are_the_chat_modes_samples_and_a_killed_run_resumes(model, tmp_path):
    from unisono.audio.io import load_audio
    from unisono.data.dialogue import DialogueDataConfig, build
    from unisono.model.vocab import Turn
    from unisono.modes.chat import ChatOptions, Conversation

    manifest = build(tmp_path / "d", DialogueDataConfig(count=6, seed=4, shares={"persona": 1.0}))
    prompts = chat_prompts(manifest, 3, seed=0)
    config = ChatRolloutConfig(candidates=3, max_tokens=12, seed=9, margin=0.0)
    run = tmp_path / "run"
    pairs = chat_rollouts(model, "embedded", prompts, run, config, LengthJudge())
    rows = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    assert [r["prompt"]["id"] for r in rows] == [p["id"] for p in prompts]
    # candidate k of turn i: the chat mode's reply to that turn with seed 9 + 1000 i + k
    p, c = prompts[1], rows[1]["candidates"][2]
    conversation = Conversation(model, ChatOptions(system=p["persona"], max_tokens=12, temperature=1.0, top_p=0.95,
                                                   seed=9 + 1000 + 2, speak=False))
    conversation.history = [Turn(role, [text]) for role, text in p["history"]]
    assert c["seed"] == 1011 and c["tokens"] == conversation.reply_text(load_audio(p["audio"]))[0]
    # persona rows know their answer: the answer reward is the evaluation's check of it
    fact = p["expect"][0]
    named = re.search(rf"\b{fact}\b", c["tokens"], re.IGNORECASE) is not None
    assert fact in p["persona"] and c["rewards"]["answer"] == float(named)
    assert c["total"] == pytest.approx(c["rewards"]["judge"] + c["rewards"]["length"] + c["rewards"]["answer"], abs=1e-3)
    for pair, row in zip(pairs, rows):
        best = max(row["candidates"], key=lambda x: (x["total"], -x["seed"]))
        assert pair["chosen"] == best["tokens"] and pair["scorer"] == "length-judge"
    # a turn whose audio is gone is skipped with a warning; the others are kept
    broken = dict(prompts[0], id="gone", audio=str(tmp_path / "missing.flac"))
    assert chat_rollouts(model, "embedded", [broken] + prompts, tmp_path / "run2", config, LengthJudge()) == \
        chat_rollouts(model, "embedded", prompts, tmp_path / "run2", config, LengthJudge())
    assert "gone" not in (tmp_path / "run2" / "rollouts.jsonl").read_text()
    # killed mid-line: the torn line goes, the turn is rolled out again, no pair twice
    text = (run / "rollouts.jsonl").read_text()
    (run / "rollouts.jsonl").write_text(text[: len(text) - 30])
    again = chat_rollouts(model, "embedded", prompts, run, config, LengthJudge())
    assert [p["id"] for p in again] == [p["id"] for p in pairs]


@needs_espeak
def test_dpo_on_dialogue_pairs_from_the_command(model, tmp_path):
    from typer.testing import CliRunner

    from unisono.cli import app
    from unisono.data.dialogue import DialogueDataConfig, build
    from unisono.model.unisono import default_model_path

    manifest = build(tmp_path / "d", DialogueDataConfig(count=4, seed=5, shares={"facts": 1.0}))
    prompts = chat_prompts(manifest, 4)
    chat_rollouts(model, "embedded", prompts, tmp_path / "run", ChatRolloutConfig(candidates=2, max_tokens=8, margin=0.0),
                  LengthJudge())
    runner = CliRunner(env={"COLUMNS": "300"})
    out = runner.invoke(app, ["rlhf", "dpo", str(tmp_path / "run" / "pairs.jsonl"), "--init", str(default_model_path()),
                              "--out", str(tmp_path / "dpo"), "--steps", "2", "--pairs-per-batch", "2", "--threads", "1"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    meta = json.loads((tmp_path / "dpo" / "model" / "config.json").read_text())["meta"]["stages"][-1]
    assert meta["stage"] == "dpo-chat"
