"""Dialogue evaluation: spoken conversations written for this repository; every system hears the same audio.

    prompt (persona, the user's turns, what a right answer mentions, how the user sounds)
      ─► each user turn spoken by espeak-ng in a voice whose attributes are known (gender by
         variant, speaking rate in words per minute) ─► the system, turn by turn, history kept
      ─► per reply: the judge's score, answer checks, the reply's intelligibility, latency

A prompt file is JSON lines (`prompts/dialogue.jsonl` is the repository's set, written for it):

    {"id": "persona-01", "suite": "persona", "persona": "You are Mira, a librarian ...",
     "turns": ["Hello! What is your name?", ...], "expect": [["mira"], ["librarian", "library"], ...]}
    {"id": "gender-01", "suite": "paralinguistic", "attribute": "gender", "voice": {"gender": "female"},
     "turns": ["Do I sound like a man or a woman?"], "options": ["man", "woman"], "expect": [["woman"]]}

Suites: `qa` (spoken questions with answers checked by word match), `persona` (a system turn with
facts, asked for over 3 turns), `paralinguistic` (questions only the audio answers, on voices
whose attribute is known from how they were made; `options` are the answers the question offers,
and a reply is right when it names the expected one and no other), `open` (judged only). Every
reply is judged (`eval.judge`: the probability-weighted score, and the written one when there is
one). A reply is spoken (unless `speak=False`) and a recogniser's WER against its own text says
whether it can be understood.

Systems: `unisono` (the embedded model), `unisono:DIR`, and `cascade` — Whisper tiny.en hears,
a pretrained instruct LLM (`cascade:SOURCE`, default the pinned SmolLM2-135M-Instruct) answers
in text, espeak-ng says it: the pipeline a pretrained backbone is measured against.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from unisono.eval.metrics import (ErrorCounts, count_errors, difference_interval, format_difference,
                                  mean_difference_interval, total)
from unisono.eval.normalize import make_scoring

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "prompts" / "dialogue.jsonl"
SUITES = ("qa", "persona", "paralinguistic", "open")
ATTRIBUTES = {"gender": ("female", "male"), "rate": ("slow", "fast")}
LANGUAGES = ("en", "zh")
USER_WPM = {"slow": 105, "fast": 260}  # the user's speaking rate; 165 otherwise
USER_VARIANT = {"female": "f3", "male": "m3"}  # espeak-ng variants; m3 otherwise
USER_VOICE = {"en": "en-us", "zh": "cmn"}


@dataclass
class DialoguePrompt:
    id: str
    suite: str
    turns: list[str]
    language: str = "en"
    persona: str | None = None
    expect: list[list[str]] | None = None  # per turn, the words a right answer mentions (any of them)
    options: list[str] | None = None  # the answers the question offers: a right reply names only the expected one
    attribute: str | None = None  # what a paralinguistic question asks about (gender, rate)
    voice: dict[str, str] = field(default_factory=dict)  # how the user sounds: gender, rate


def read_prompts(path: Path) -> list[DialoguePrompt]:
    """The prompts of a JSONL file; a broken row is an error naming its line."""
    from unisono.eval.prompt_file import dataclass_row, read_prompt_file

    def make(row: dict) -> DialoguePrompt:
        prompt = dataclass_row(DialoguePrompt, row)
        _check(prompt)
        return prompt

    return read_prompt_file(path, make)


def _check(p: DialoguePrompt) -> None:
    if p.suite not in SUITES:
        raise ValueError(f"suite {p.suite!r}: choose from {', '.join(SUITES)}")
    if p.language not in LANGUAGES:
        raise ValueError(f"language {p.language!r}: choose from {', '.join(LANGUAGES)}")
    if not isinstance(p.turns, list) or not p.turns or not all(isinstance(t, str) and t.strip() for t in p.turns):
        raise ValueError("'turns' must be a non-empty list of non-empty strings")
    if p.expect is not None:
        if not isinstance(p.expect, list) or len(p.expect) > len(p.turns) or not all(
                isinstance(words, list) and words and all(isinstance(w, str) and w.strip() for w in words)
                for words in p.expect):
            raise ValueError("'expect' is a list (one per turn, at most as many as turns) of non-empty word lists")
    if p.suite in ("qa", "persona", "paralinguistic") and not p.expect:
        raise ValueError(f"a {p.suite} prompt needs 'expect': the words a right answer mentions")
    for key, value in p.voice.items():
        if key not in ATTRIBUTES or value not in ATTRIBUTES[key]:
            raise ValueError(f"voice {key}={value!r}: the user's voice takes "
                             + "; ".join(f"{k} in {'/'.join(v)}" for k, v in ATTRIBUTES.items()))
    if p.suite == "paralinguistic":
        if p.attribute not in ATTRIBUTES or p.attribute not in p.voice:
            raise ValueError("a paralinguistic prompt names its 'attribute' (gender, rate) and sets it in 'voice'")
        if p.options and not all(w in p.options for w in p.expect[0]):
            raise ValueError("the expected answer must be one of 'options'")


# ---- checking answers --------------------------------------------------------------------------
def mentions(reply: str, word: str, language: str) -> bool:
    """`word` said in `reply`: a whole word in English (case and punctuation ignored), a substring in Mandarin."""
    if language == "zh":
        return word in reply
    return re.search(rf"(?<![\w']){re.escape(word.lower())}(?![\w'])", reply.lower()) is not None


def answer_correct(prompt: DialoguePrompt, turn: int, reply: str) -> bool | None:
    """Whether the reply to turn `turn` is right; None when the turn has nothing to check."""
    if not prompt.expect or turn >= len(prompt.expect):
        return None
    return check_answer(reply, prompt.expect[turn], prompt.options, prompt.language)


def check_answer(reply: str, expected: Sequence[str], options: Sequence[str] | None, language: str) -> bool:
    """A reply mentions one of the `expected` words; where the question offers `options` ("man or
    woman?"), it names at least one and only expected ones (naming both, or neither, is no answer)."""
    if options:
        named = {o for o in options if mentions(reply, o, language)}
        return bool(named) and named <= set(expected)
    return any(mentions(reply, w, language) for w in expected)


# ---- the user's voice --------------------------------------------------------------------------
def user_audio(prompt: DialoguePrompt, text: str) -> np.ndarray:
    """A user turn spoken by espeak-ng, in the voice the prompt describes (16 kHz float32)."""
    from unisono.data.engines import Voice, render

    variant = USER_VARIANT.get(prompt.voice.get("gender"), "m3")
    wpm = USER_WPM.get(prompt.voice.get("rate"), 165)
    voice = Voice("espeak-ng", f"{USER_VOICE[prompt.language]}+{variant}", prompt.language)
    return render(voice, text, {"wpm": wpm, "pitch": 50})


# ---- systems -----------------------------------------------------------------------------------
@dataclass
class TurnResult:
    heard: str  # what the system took the user to say
    reply: str
    audio: np.ndarray | None
    seconds: dict[str, float]  # since the user's turn was handed over: heard, replied, first_audio, spoken


@dataclass
class DialogueSystem:
    name: str
    languages: tuple[str, ...]
    # a conversation: (persona, seed) -> a function from one user turn's audio to the system's turn
    start: Callable[[str | None, int], Callable[[np.ndarray], TurnResult]]


def _unisono(option: str, threads: int, speak: bool, max_tokens: int) -> DialogueSystem:
    import torch

    from unisono.model.unisono import Unisono
    from unisono.modes.chat import ChatOptions, Conversation

    torch.set_num_threads(threads)
    model = Unisono.load(option if option and option != "default" else None)
    speak = speak and model.vocab.n_speech > 0

    def start(persona: str | None, seed: int) -> Callable[[np.ndarray], TurnResult]:
        conversation = Conversation(model, ChatOptions(system=persona, max_tokens=max_tokens, temperature=0.0,
                                                       seed=seed, speak=speak))

        def turn(audio: np.ndarray) -> TurnResult:
            reply = conversation.turn(audio)
            return TurnResult(reply.user_text, reply.text, reply.audio, reply.seconds)

        return turn

    return DialogueSystem(f"unisono:{option}" if option else "unisono", LANGUAGES, start)


def _cascade(option: str, threads: int, speak: bool, max_tokens: int) -> DialogueSystem:
    """Whisper tiny.en → a pretrained instruct LLM (greedy, its chat template) → espeak-ng."""
    from unisono.data.engines import Voice, render
    from unisono.eval.judge import DEFAULT_JUDGE, InstructLLM
    from unisono.peers.recognizers import build_recognizer

    llm = InstructLLM(option or DEFAULT_JUDGE, threads=threads)
    asr = build_recognizer("faster-whisper", threads=threads)
    voice = Voice("espeak-ng", "en-us", "en")

    def start(persona: str | None, seed: int) -> Callable[[np.ndarray], TurnResult]:
        messages = [{"role": "system", "content": persona}] if persona else []

        def turn(audio: np.ndarray) -> TurnResult:
            started = time.perf_counter()
            heard = asr.transcribe(audio, "en").strip()
            seconds = {"heard": time.perf_counter() - started}
            messages.append({"role": "user", "content": heard})
            reply = llm.generate(llm.chat_ids(messages), max_tokens).strip()
            messages.append({"role": "assistant", "content": reply})
            seconds["replied"] = time.perf_counter() - started
            spoken = None
            if speak and reply:
                spoken = render(voice, reply, {"wpm": 175, "pitch": 50})
                seconds["first_audio"] = seconds["spoken"] = time.perf_counter() - started
            return TurnResult(heard, reply, spoken, seconds)

        return turn

    return DialogueSystem(f"cascade:{option}" if option else "cascade", ("en",), start)


def build_system(spec: str, threads: int = 2, speak: bool = True, max_tokens: int = 64) -> DialogueSystem:
    kind, _, option = spec.partition(":")
    if kind == "unisono":
        return _unisono(option, threads, speak, max_tokens)
    if kind == "cascade":
        return _cascade(option, threads, speak, max_tokens)
    raise ValueError(f"unknown dialogue system {spec!r}: unisono, unisono:DIR, cascade, cascade:SOURCE")


# ---- running and scoring -----------------------------------------------------------------------
@dataclass
class SystemResult:
    name: str
    items: list[dict] = field(default_factory=list)  # one per prompt, its turns inside
    skipped: list[dict] = field(default_factory=list)

    def turns(self, suite: str | None = None) -> list[dict]:
        return [dict(t, id=i["id"], suite=i["suite"], attribute=i["attribute"], turn=n)
                for i in self.items if suite in (None, i["suite"]) for n, t in enumerate(i["turns"])]


def evaluate(system: DialogueSystem, prompts: list[DialoguePrompt], judge=None, recognizer=None, seed: int = 0,
             keep_audio: Callable[[str, str, np.ndarray], None] | None = None,
             progress: Callable[[], None] | None = None) -> SystemResult:
    """One system over the prompts, each a conversation of its own. A failure on one prompt is
    recorded as skipped with its reason, and the rest go on."""
    result = SystemResult(system.name)
    for index, prompt in enumerate(prompts):
        if prompt.language not in system.languages:
            result.skipped.append({"id": prompt.id, "reason": f"{system.name} does not converse in {prompt.language}"})
        else:
            try:
                result.items.append(_converse(system, prompt, seed + index, judge, recognizer, keep_audio))
            except Exception as e:  # noqa: BLE001 - one prompt's failure is reported, the evaluation goes on
                result.skipped.append({"id": prompt.id, "reason": f"{type(e).__name__}: {e}"})
        if progress is not None:
            progress()
    return result


def _converse(system: DialogueSystem, prompt: DialoguePrompt, seed: int, judge, recognizer, keep_audio) -> dict:
    scoring = make_scoring(prompt.language)
    turn = system.start(prompt.persona, seed)
    said: list[tuple[str, str]] = []
    turns = []
    for n, text in enumerate(prompt.turns):
        out = turn(user_audio(prompt, text))
        row = {"user": text, "heard": out.heard, "reply": out.reply,
               "heard_counts": count_errors(scoring.normalize(text), scoring.normalize(out.heard), scoring.unit).to_dict(),
               "correct": answer_correct(prompt, n, out.reply),
               "seconds": {k: round(v, 4) for k, v in out.seconds.items()}}
        if judge is not None:
            verdict = judge(out.reply, said + [("user", text)], prompt.persona)
            row["judge"] = None if verdict.expected is None else round(verdict.expected, 4)
            row["judge_written"] = verdict.score
        if out.audio is not None and len(out.audio):
            row["audio_s"] = round(len(out.audio) / 16000, 3)
            if recognizer is not None and recognizer.supports(prompt.language):
                hypothesis = recognizer.transcribe(out.audio, prompt.language)
                row["spoken_hypothesis"] = hypothesis
                row["spoken_counts"] = count_errors(scoring.normalize(out.reply), scoring.normalize(hypothesis),
                                                    scoring.unit).to_dict()
            if keep_audio is not None:
                keep_audio(system.name, f"{prompt.id}-{n + 1}", out.audio)
        said += [("user", text), ("assistant", out.reply)]
        turns.append(row)
    return {"id": prompt.id, "suite": prompt.suite, "attribute": prompt.attribute, "language": prompt.language,
            "persona": prompt.persona, "turns": turns}


def _rate(rows: list[dict], key: str) -> float | None:
    present = [ErrorCounts.from_dict(r[key]) for r in rows if r.get(key)]
    return total(present).rate if present else None


def summarize(result: SystemResult) -> dict:
    """The suites' figures: judge score, accuracy per suite and per attribute, how well the user was
    heard, how well the replies can be understood, and latency."""
    rows = result.turns()
    out: dict[str, Any] = {"system": result.name, "prompts": len(result.items), "turns": len(rows),
                           "skipped": len(result.skipped)}
    judged = [r["judge"] for r in rows if r.get("judge") is not None]
    out["judge"] = statistics.fmean(judged) if judged else None
    written = [r["judge_written"] for r in rows if r.get("judge_written") is not None]
    out["judge_written"] = statistics.fmean(written) if written else None
    out["judge_written_share"] = len(written) / len(judged) if judged else None
    for suite in ("qa", "persona"):
        checked = [r["correct"] for r in result.turns(suite) if r["correct"] is not None]
        out[f"{suite}_accuracy"] = sum(checked) / len(checked) if checked else None
        out[f"{suite}_checked"] = len(checked)
    for attribute in ATTRIBUTES:
        checked = [r["correct"] for r in result.turns("paralinguistic")
                   if r["attribute"] == attribute and r["correct"] is not None]
        out[f"{attribute}_accuracy"] = sum(checked) / len(checked) if checked else None
        out[f"{attribute}_checked"] = len(checked)
    out["heard_error_rate"] = _rate(rows, "heard_counts")
    out["spoken_error_rate"] = _rate(rows, "spoken_counts")
    for stage in ("replied", "first_audio"):
        values = [r["seconds"][stage] for r in rows if stage in r["seconds"]]
        out[f"{stage}_median_s"] = float(np.median(values)) if values else None
        out[f"{stage}_p95_s"] = float(np.percentile(values, 95)) if values else None
    return out


def compare(baseline: SystemResult, other: SystemResult) -> dict:
    """`other - baseline` over the turns both answered: judge score, answer accuracy and the spoken
    replies' WER, with paired-bootstrap 95 % intervals (`metrics`)."""
    mine = {(r["id"], r["turn"]): r for r in other.turns()}
    pairs = [(r, mine[(r["id"], r["turn"])]) for r in baseline.turns() if (r["id"], r["turn"]) in mine]
    out: dict[str, Any] = {"turns": len(pairs)}
    scored = [(a["judge"], b["judge"]) for a, b in pairs if a.get("judge") is not None and b.get("judge") is not None]
    if scored:
        base, new = (np.array(v, dtype=float) for v in zip(*scored))
        out["judge"], out["judge_ci"] = float(np.mean(new - base)), mean_difference_interval(base, new)
    checked = [(a["correct"], b["correct"]) for a, b in pairs if a["correct"] is not None and b["correct"] is not None]
    if checked:
        base, new = (np.array(v, dtype=float) for v in zip(*checked))
        out["accuracy"], out["accuracy_ci"] = float(np.mean(new - base)), mean_difference_interval(base, new)
        out["checked"] = len(checked)
    spoken = [(ErrorCounts.from_dict(a["spoken_counts"]), ErrorCounts.from_dict(b["spoken_counts"]))
              for a, b in pairs if a.get("spoken_counts") and b.get("spoken_counts")]
    if spoken:  # how well the spoken replies are understood, each against its own text
        base_counts, new_counts = (list(v) for v in zip(*spoken))
        out["reply_wer"] = total(new_counts).rate - total(base_counts).rate
        out["reply_wer_ci"] = difference_interval(base_counts, new_counts)
        out["spoken"] = len(spoken)
    return out


def write_report(results: list[SystemResult], out: Path, command: str = "") -> Path:
    """results.json (every turn) and README.md (the suites' table, differences, sample conversations)."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = [summarize(r) for r in results]
    comparisons = {r.name: compare(results[0], r) for r in results[1:]}
    (out / "results.json").write_text(json.dumps({
        "command": command, "summaries": summaries, "comparisons": comparisons,
        "systems": [{"name": r.name, "items": r.items, "skipped": r.skipped} for r in results]},
        ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    lines = ["# Dialogue evaluation", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += table_lines(summaries) + [""]
    for name, c in comparisons.items():
        parts = []
        if "judge" in c:
            lo, hi = c["judge_ci"]
            parts.append(f"judge {c['judge']:+.3f} ({lo:+.3f} to {hi:+.3f})")
        if "accuracy" in c:
            lo, hi = c["accuracy_ci"]
            parts.append(f"accuracy {100 * c['accuracy']:+.1f} points ({100 * lo:+.1f} to {100 * hi:+.1f}) "
                         f"over {c['checked']} checked turns")
        if "reply_wer" in c:
            parts.append(f"reply WER {format_difference(c['reply_wer'], c['reply_wer_ci'])} points "
                         f"over {c['spoken']} spoken replies")
        lines.append(f"- {name} − {results[0].name} over {c['turns']} turns: " + ("; ".join(parts) or "nothing paired"))
    lines += ["", "## Conversations (the first of each suite)", ""]
    for r in results:
        for suite in SUITES:
            item = next((i for i in r.items if i["suite"] == suite), None)
            if item is None:
                continue
            lines.append(f"**{r.name}**, {item['id']}" + (f" (persona: {item['persona']})" if item["persona"] else ""))
            lines.append("")
            for t in item["turns"]:
                mark = {True: " ✓", False: " ✗", None: ""}[t["correct"]]
                lines += [f"> user: {t['user']}  ", f"> heard: {t['heard']}  ", f"> reply: {t['reply']}{mark}", ""]
    if any(r.skipped for r in results):
        lines += ["## Skipped", ""] + [f"- {r.name} {s['id']}: {s['reason']}" for r in results for s in r.skipped]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out / "README.md"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table_lines(summaries: list[dict]) -> list[str]:
    lines = ["| system | judge (1-5) | QA | persona facts | gender | rate | heard WER | reply WER "
             "| reply / first audio, median s | p95 s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(
            f"| {s['system']} | {_num(s['judge'])} | {_pct(s['qa_accuracy'])} | {_pct(s['persona_accuracy'])} "
            f"| {_pct(s['gender_accuracy'])} | {_pct(s['rate_accuracy'])} | {_pct(s['heard_error_rate'])} "
            f"| {_pct(s['spoken_error_rate'])} | {_num(s['replied_median_s'])} / {_num(s['first_audio_median_s'])} "
            f"| {_num(s['replied_p95_s'])} / {_num(s['first_audio_p95_s'])} |")
    return lines
