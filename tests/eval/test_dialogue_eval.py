"""`unisono eval dialogue`: the prompt set, answer checks, the user's voices, a run against the
conversation mode by hand, the summary and the command's report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from unisono.eval.dialogue import (DEFAULT_PROMPTS, SUITES, DialoguePrompt, SystemResult, answer_correct, build_system,
                                   compare, evaluate, mentions, read_prompts, summarize, user_audio)
from unisono.eval.metrics import ErrorCounts

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")


def test_the_repository_set_covers_every_suite_and_attribute():
    prompts = read_prompts(DEFAULT_PROMPTS)
    assert {p.suite for p in prompts} == set(SUITES) and {p.language for p in prompts} == {"en", "zh"}
    persona = [p for p in prompts if p.suite == "persona"]
    assert persona and all(p.persona and len(p.turns) >= 3 and len(p.expect) == len(p.turns) for p in persona)
    para = [p for p in prompts if p.suite == "paralinguistic"]
    for attribute in ("gender", "rate"):  # both values of each attribute are asked about
        assert {p.voice[attribute] for p in para if p.attribute == attribute} == ({"female", "male"} if attribute == "gender"
                                                                                  else {"slow", "fast"})


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2"),
    ('{"id": "b", "suite": "chat", "turns": ["hi"]}', "suite 'chat'"),
    ('{"id": "b", "suite": "open", "turns": []}', "non-empty list"),
    ('{"id": "b", "suite": "open", "turns": ["hi"], "mood": "x"}', "unknown field"),
    ('{"id": "b", "suite": "qa", "turns": ["hi"]}', "needs 'expect'"),
    ('{"id": "b", "suite": "qa", "turns": ["hi"], "expect": [["a"], ["b"]]}', "at most as many as turns"),
    ('{"id": "b", "suite": "open", "turns": ["hi"], "voice": {"gender": "robot"}}', "voice gender='robot'"),
    ('{"id": "b", "suite": "paralinguistic", "turns": ["hi"], "expect": [["man"]]}', "names its 'attribute'"),
    ('{"id": "b", "suite": "paralinguistic", "attribute": "gender", "voice": {"gender": "male"}, "turns": ["hi"], '
     '"options": ["man", "woman"], "expect": [["boy"]]}', "one of 'options'"),
    ('{"id": "a", "suite": "open", "turns": ["hi"]}', "appears twice"),
])
def test_broken_rows_are_named_by_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "suite": "open", "turns": ["hello"]}\n' + line + "\n")
    with pytest.raises(ValueError, match=message) as e:
        read_prompts(path)
    assert "line 2" in str(e.value)


def test_answers_are_checked_by_whole_words_and_offered_options():
    assert mentions("It's Tokyo, of course.", "tokyo", "en") and not mentions("Tokyoite", "tokyo", "en")
    assert mentions("一个星期有七天。", "七", "zh")
    gender = DialoguePrompt("g", "paralinguistic", ["Man or woman?"], attribute="gender", voice={"gender": "male"},
                            options=["man", "woman"], expect=[["man"]])
    assert answer_correct(gender, 0, "You sound like a man.") is True
    assert answer_correct(gender, 0, "A woman, I think.") is False  # "woman" does not contain the word "man"
    assert answer_correct(gender, 0, "A man or a woman.") is False  # naming both is no answer
    assert answer_correct(gender, 0, "Hard to say.") is False
    qa = DialoguePrompt("q", "qa", ["How many?", "And then?"], expect=[["seven", "7"]])
    assert answer_correct(qa, 0, "There are 7.") is True and answer_correct(qa, 1, "anything") is None


@needs_espeak
def test_the_users_voice_has_the_attributes_the_prompt_asks_for():
    from unisono.eval.speech_scores import measure_delivery

    text = "Would you say my voice is male or female?"
    heard = {}
    for key, voice in {"female": {"gender": "female"}, "male": {"gender": "male"},
                       "slow": {"rate": "slow"}, "fast": {"rate": "fast"}}.items():
        audio = user_audio(DialoguePrompt("x", "open", [text], voice=voice), text)
        heard[key] = measure_delivery(audio, text, "en")
    assert heard["female"].f0_median_hz > 1.3 * heard["male"].f0_median_hz
    assert heard["fast"].rate > 1.8 * heard["slow"].rate


@pytest.fixture(scope="module")
def model():
    from unisono.model.unisono import Unisono

    return Unisono.load()


class CountingJudge:
    """Stands in for the LLM judge (tested in test_judge.py): a score from the reply's length."""

    def __init__(self):
        self.calls = []

    def __call__(self, reply, dialogue, persona=None):
        from unisono.eval.judge import Judgement

        self.calls.append((reply, list(dialogue), persona))
        return Judgement("", None, "no score line", expected=1 + min(len(reply), 40) / 10)


@needs_espeak
def test_a_run_holds_the_conversation_the_chat_mode_holds(model, monkeypatch):
    from unisono.modes.chat import ChatOptions, Conversation

    prompts = [DialoguePrompt("p", "persona", ["What is your name?", "Where do you live?"], persona="You are Mira.",
                              expect=[["mira"], ["leeds"]]),
               DialoguePrompt("q", "qa", ["What do bees make?"], expect=[["honey"]])]
    monkeypatch.setattr("unisono.model.unisono.Unisono.load", classmethod(lambda cls, *a, **k: model))
    system = build_system("unisono", threads=1, speak=False, max_tokens=12)
    judge = CountingJudge()
    result = evaluate(system, prompts, judge=judge, seed=5)
    assert [len(i["turns"]) for i in result.items] == [2, 1] and not result.skipped
    # by hand: the same audio through the conversation mode, persona and history kept
    by_hand = Conversation(model, ChatOptions(system="You are Mira.", max_tokens=12, temperature=0.0, seed=5,
                                              speak=False))
    for turn, text in zip(result.items[0]["turns"], prompts[0].turns):
        reply = by_hand.turn(user_audio(prompts[0], text))
        assert (turn["heard"], turn["reply"]) == (reply.user_text, reply.text)
        assert turn["correct"] == answer_correct(prompts[0], prompts[0].turns.index(text), reply.text)
    # the judge saw the script (not what the model heard), the persona, and the replies so far
    assert judge.calls[1][1] == [("user", "What is your name?"), ("assistant", result.items[0]["turns"][0]["reply"]),
                                 ("user", "Where do you live?")] and judge.calls[1][2] == "You are Mira."
    summary = summarize(result)
    rows = result.turns()
    assert summary["judge"] == pytest.approx(np.mean([r["judge"] for r in rows]))
    assert summary["persona_checked"] == 2 and summary["qa_checked"] == 1
    assert summary["persona_accuracy"] == sum(r["correct"] for r in result.turns("persona")) / 2
    same = compare(result, result)
    assert same["turns"] == 3 and same["judge"] == 0 and same["accuracy"] == 0


def test_compare_pairs_turns_and_bootstraps_the_difference():
    def result(name, scores, correct):
        return SystemResult(name, [{"id": f"p{i}", "suite": "qa", "attribute": None, "turns": [
            {"judge": s, "correct": c, "seconds": {}}]} for i, (s, c) in enumerate(zip(scores, correct))])

    a = result("a", [1.0, 2.0, 1.5, 2.5, 1.0, 2.0], [False, False, True, False, False, True])
    b = result("b", [2.0, 3.0, 2.5, 3.5, 2.0, 3.0], [True, False, True, True, False, True])
    c = compare(a, b)
    assert c["judge"] == pytest.approx(1.0) and c["judge_ci"] == (1.0, 1.0)  # every pair differs by exactly 1
    assert c["accuracy"] == pytest.approx(2 / 6) and c["checked"] == 6
    lo, hi = c["accuracy_ci"]
    assert 0 <= lo <= 2 / 6 <= hi
    assert "reply_wer" not in c  # nothing was spoken


def test_compare_bootstraps_the_spoken_replies_wer_each_against_its_own_text():
    def result(name, spoken):  # (errors, words) per turn, as the recognizer counted them
        return SystemResult(name, [{"id": f"p{i}", "suite": "open", "attribute": None, "turns": [
            {"judge": None, "correct": None, "seconds": {},
             "spoken_counts": ErrorCounts(substitutions=e, hits=w - e).to_dict()}]} for i, (e, w) in enumerate(spoken)])

    a = result("a", [(2, 4), (3, 6), (1, 2), (4, 8), (2, 4)])  # every reply half wrong
    b = result("b", [(1, 10), (1, 10), (1, 10), (1, 10), (1, 10)])  # longer replies, one word in ten wrong
    c = compare(a, b)
    assert c["spoken"] == 5 and c["reply_wer"] == pytest.approx(0.1 - 0.5)
    assert c["reply_wer_ci"] == pytest.approx((-0.4, -0.4))  # every resample: 0.1 - 0.5


@needs_espeak
def test_the_command_writes_a_report(tmp_path):
    from typer.testing import CliRunner

    from unisono.cli import app

    runner = CliRunner(env={"COLUMNS": "300"})
    out = runner.invoke(app, ["eval", "dialogue", "--suite", "qa", "--limit", "2", "--judge", "none",
                              "--recognizer", "none", "--text-only", "--threads", "1", "--max-tokens", "8",
                              "--report", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["summaries"][0]["turns"] == 2 and saved["summaries"][0]["qa_checked"] == 2
    assert "| unisono |" in (tmp_path / "r" / "README.md").read_text()
    # the report's command repeats the run: every option that changed what was measured
    assert saved["command"].endswith("--suite qa --limit 2 --text-only --recognizer none --max-tokens 8")
    bad = runner.invoke(app, ["eval", "dialogue", "--suite", "chit-chat"])
    assert bad.exit_code != 0 and "qa, persona" in " ".join(bad.output.split())
