"""Spoken dialogue data: rows whose replies and speakers are known, nothing of the evaluation set,
and a build that resumes."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from unisono.data.dialogue import (CITIES, FEMALE_VARIANTS, JOBS, MALE_VARIANTS, NAMES, RATES, SPEAKER_REPLIES,
                                   DialogueDataConfig, build, chatterbot_rows, excluded_turns, plan_rows, _key)
from unisono.eval.dialogue import DEFAULT_PROMPTS, read_prompts

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")


def test_the_evaluation_set_is_kept_out():
    evaluation = read_prompts(DEFAULT_PROMPTS)
    excluded = excluded_turns([str(DEFAULT_PROMPTS)])
    rows = list(plan_rows(DialogueDataConfig(count=1500, seed=3, exclude=[str(DEFAULT_PROMPTS)])))
    assert not {_key(r.user) for r in rows} & excluded
    # the evaluation personas' names and cities are not in the matrix
    said = " ".join(p.persona for p in evaluation if p.persona)
    assert not {n for n in NAMES if re.search(rf"\b{n}\b", said)} and not {c for c in CITIES if c in said}
    assert not {j for j in JOBS if re.search(rf"\b{j}\b", said)}
    # many of each, each once, and no word both a name and a city
    assert len(set(NAMES)) == len(NAMES) >= 150 and len(set(JOBS)) == len(JOBS) >= 50
    assert len(set(CITIES)) == len(CITIES) >= 80 and not set(NAMES) & set(CITIES)
    sources = {s: sum(r.source == s for r in rows) / len(rows) for s in ("chatterbot", "persona", "facts", "speaker")}
    assert abs(sources["chatterbot"] - 0.45) < 0.05 and abs(sources["speaker"] - 0.15) < 0.04


def test_rows_are_spoken_style_and_persona_answers_follow_the_persona():
    for r in chatterbot_rows("en") + chatterbot_rows("zh"):
        assert len(r.reply) <= 160 and "\n" not in r.reply and not re.search(r"[*#`]", r.reply)
        assert [role for role, _ in r.history] == ["user", "assistant"] * (len(r.history) // 2)
    for r in plan_rows(DialogueDataConfig(count=300, seed=1, shares={"persona": 1.0})):
        name, job, city = re.match(r"You are (\w+), an? ([\w ]+) who lives in ([\w ]+)\.", r.persona).groups()
        assert any(fact in r.reply for fact in (name, job, city))
        assert not re.search(r"\ba [aeiou]", " ".join([r.persona, r.reply] + [t for _, t in r.history]))  # "an actor"
        assert all(any(f in a for f in (name, job, city)) for role, a in r.history if role == "assistant")


def test_known_answers_are_recorded_and_the_reference_reply_names_them():
    from unisono.eval.dialogue import check_answer

    rows = list(plan_rows(DialogueDataConfig(count=400, seed=5, shares={"persona": 1, "facts": 1, "speaker": 1})))
    assert {r.source for r in rows} == {"persona", "facts", "speaker"} and all(r.expect for r in rows)
    for r in rows:
        assert check_answer(r.reply, r.expect, r.options, r.language), r
        if r.source == "speaker":  # the other value's words are offered too, and naming them is wrong
            (attribute, value), = r.speaker.items()
            others = [w for w in r.options if w not in r.expect]
            assert others and not check_answer(f"{r.reply} Or {others[0]}.", r.expect, r.options, r.language)
        if r.source == "persona":  # the fact asked for last is in the persona, and the reply says it
            assert r.expect[0] in r.persona
    assert not any(r.expect for r in plan_rows(DialogueDataConfig(count=50, seed=5, shares={"chatterbot": 1})))


def test_the_plan_is_fixed_by_its_seed():
    a = [r.user for r in plan_rows(DialogueDataConfig(count=50, seed=7))]
    assert a == [r.user for r in plan_rows(DialogueDataConfig(count=50, seed=7))]
    assert a != [r.user for r in plan_rows(DialogueDataConfig(count=50, seed=8))]


@needs_espeak
def test_speaker_replies_come_from_the_voice_the_turn_was_spoken_in_and_a_build_resumes(tmp_path):
    config = DialogueDataConfig(count=16, seed=2, shares={"speaker": 0.7, "facts": 0.3})
    manifest = build(tmp_path / "d", config)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 16
    for r in rows:
        meta = r["meta"]
        attributes, variant = meta["speaker_attributes"], meta["voice"].split("+")[1]
        assert variant in (FEMALE_VARIANTS if attributes["gender"] == "female" else MALE_VARIANTS)
        lo, hi = RATES[attributes["rate"]]
        assert lo <= meta["synth"]["wpm"] <= hi
        if meta["dialogue"]["source"] == "speaker":
            asked = "gender" if re.search(r"\b(man|woman|male|female)\b", r["text"]) else "rate"
            assert meta["dialogue"]["reply"] in SPEAKER_REPLIES[(asked, attributes[asked])]
        assert (tmp_path / "d" / r["audio"]).stat().st_size > 1000
    # killed mid-write: the torn line goes, the rest is kept, the rows are made again alike
    text = manifest.read_text()
    manifest.write_text(text[: len(text) - 40])
    build(tmp_path / "d", config)
    again = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["id"] for r in again] == [r["id"] for r in rows] and again == rows


def test_disfluent_turns_keep_their_words_and_their_reply():
    import numpy as np

    from unisono.data.dialogue import FILLERS, REVISIONS, disfluent

    rng = np.random.default_rng(0)
    said = [disfluent("What is your favourite colour?", rng) for _ in range(60)]
    assert all(s != "What is your favourite colour?" for s in said)
    for s in said:  # the original words survive in order; what was added is a filler, a repeat or a restart
        words = [w.strip(",") for w in s.split()]
        assert set(words) - {"What", "is", "your", "favourite", "colour?", "what"} <= {
            w for phrase in FILLERS + REVISIONS for w in phrase.split()}
    assert any("no wait" in s or "I mean" in s or "sorry" in s or "actually" in s for s in said)
    assert disfluent("Hi there", rng) == "Hi there"  # too short to stumble over
    marks = [f"{w}," for w in FILLERS + REVISIONS]
    rough = [r for r in plan_rows(DialogueDataConfig(count=300, seed=1, disfluent=0.5)) if r.language == "en"]
    share = sum(any(m in r.user for m in marks) for r in rough) / len(rough)
    assert 0.2 < share < 0.5  # half are made disfluent; a repeated word carries no mark


@needs_espeak
def test_the_command_builds_rows_and_refuses_bad_shares(tmp_path):
    from typer.testing import CliRunner

    from unisono.cli import app

    runner = CliRunner(env={"COLUMNS": "300"})
    out = runner.invoke(app, ["data", "dialogue", "--out", str(tmp_path / "d"), "--count", "5", "--seed", "2"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in (tmp_path / "d" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(r["meta"]["dialogue"]["reply"] for r in rows)
    for shares in ("chatterbot=0.5,gossip=0.5", "persona=-1", "persona"):
        bad = runner.invoke(app, ["data", "dialogue", "--out", str(tmp_path / "e"), "--shares", shares])
        assert bad.exit_code != 0 and "Traceback" not in bad.output
