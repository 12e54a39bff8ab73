"""Training tasks: how one manifest row (and its neighbours) becomes a prompt and its targets.

Every task writes the one prompt format of `unisono.model.vocab` (a user turn opened by a task
token, an assistant turn whose tokens are the targets), so what is trained is what the modes
run. ASR uses `unisono.modes.asr.asr_prompt` itself.

    asr          <|user|> <|asr|> [<|en|>] <|audio_start|> <|audio|>xN <|audio_end|> <|end|> <|assistant|> text <|end|>
    tts          [<|system|> instruction <|end|>] <|user|> <|tts|> text <|end|> <|assistant|> <|speech_start|> s... <|speech_end|> <|end|>
    tts-prompted <|user|> <|tts|> text1 text2 <|end|> <|assistant|> <|speech_start|> s1... | s2... <|speech_end|> <|end|>
                 (a voice prompt: the speech of text1 is given, only that of text2 is learned)
    continue     <|user|> <|continue|> u1 <|end|> <|assistant|> u2 u3 <|end|>     (each u as text or as speech tokens)
    s2s          <|user|> <|chat|> speech(q) <|end|> <|assistant|> text(a) speech(a) <|end|>
    text         <|user|> <|text|> <|end|> <|assistant|> text <|end|>
    chat         [<|system|> persona <|end|>] (<|user|> text <|end|> <|assistant|> text <|end|>)*
                 <|user|> <|audio_start|> <|audio|>xN <|audio_end|> <|end|> <|assistant|> reply <|end|>
                 (spoken dialogue, `unisono.data.dialogue` rows: the user's turn heard, the reply learned)

Speech tokens come from the row's `speech_tokens` field (codebook indices). Tasks that need
them are simply not drawn for rows without them, so a corpus without speech tokens trains
ASR and text only. `continue` pairs a row with the next rows of the same speaker (manifest
order); `s2s` with the next row of the same `conversation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from unisono.model.vocab import LANGUAGES, Special, Speech, Turn, Vocab

SPEECH_TOKENS_KEY = "speech_tokens"


@dataclass
class Example:
    """A tokenised training example."""

    ids: list[int]
    target_start: int  # ids[target_start:] are learned (the assistant's tokens and its <|end|>)
    task: str
    clip: int | None = None  # row whose audio fills the <|audio|> span, if any


@dataclass
class TaskContext:
    """What a task may read: the row, its partners (later rows to pair with) and randomness."""

    row: object  # unisono.data.manifest.Utterance
    partners: Sequence[object]  # following rows of the same speaker / conversation
    n_audio: int  # adaptor positions of the row's clip
    rng: np.random.Generator
    language_token_prob: float = 0.5


def speech_tokens(row) -> list[int] | None:
    codes = row.meta.get(SPEECH_TOKENS_KEY)
    return list(codes) if codes else None


# Augmentations that leave the voice as it was made: a TTS target may carry them. Noise, reverb,
# a telephone band or a limiter would teach the model to speak through them, and a speed change
# makes the recorded `rate` (and so the instruction) wrong.
CLEAN_AUGMENTATIONS = {"gain"}


def clean_for_tts(row) -> bool:
    """Whether a row's audio is the voice as it was made, so its speech tokens can be a TTS target."""
    return all(a.get("kind") in CLEAN_AUGMENTATIONS for a in row.meta.get("augment") or [])


def voice_instruction(row) -> str | None:
    """An instruction for instructive TTS: the row's own `instruction`, else one derived from
    the synthesis parameters the data engine recorded (`unisono.data.engines`): `rate` is the
    speaking rate relative to the voice's default (1.0), `pitch` espeak-ng's 0..99 (default 50),
    `semitones` a pitch shift."""
    meta = row.meta
    if meta.get("instruction"):
        return str(meta["instruction"])
    synth = meta.get("synth") or {}
    words = []
    rate = synth.get("rate")
    if isinstance(rate, (int, float)):
        words.append("slowly" if rate < 0.9 else "quickly" if rate > 1.12 else "at a natural pace")
    pitch, semitones = synth.get("pitch"), synth.get("semitones")
    if isinstance(pitch, (int, float)):
        words.append("with a low voice" if pitch < 35 else "with a high voice" if pitch > 65 else "")
    elif isinstance(semitones, (int, float)):
        words.append("with a low voice" if semitones < -2 else "with a high voice" if semitones > 2 else "")
    words = [w for w in words if w]
    return f"Speak {' and '.join(words)}." if words else None


# ---- builders: context -> turns, or None when the row lacks what the task needs ----------------
def asr_turns(c: TaskContext) -> list[Turn] | None:
    from unisono.modes.asr import asr_prompt

    if not c.row.text.strip():
        return None
    lang = c.row.language if c.row.language in LANGUAGES and c.rng.random() < c.language_token_prob else None
    return asr_prompt(c.n_audio, lang) + [Turn("assistant", [c.row.text])]


def tts_turns(c: TaskContext, instructive: bool = False) -> list[Turn] | None:
    codes = speech_tokens(c.row)
    if not codes or not c.row.text.strip() or not clean_for_tts(c.row):
        return None
    turns = []
    if instructive:
        instruction = voice_instruction(c.row)
        if instruction is None:
            return None
        turns.append(Turn("system", [instruction]))
    return turns + [Turn("user", [Special("tts"), c.row.text]), Turn("assistant", [Speech(tuple(codes))])]


def prompted_tts_turns(c: TaskContext) -> tuple[list[Turn], int] | None:
    """TTS that continues a voice prompt: the reference utterance's text and speech come first, as
    `unisono speak --voice REF --voice-text TEXT` gives them. Returns the turns and how many speech
    tokens of the assistant turn are given (not learned)."""
    if not c.partners:
        return None
    reference, target = c.row, c.partners[0]
    given, codes = speech_tokens(reference), speech_tokens(target)
    if (not given or not codes or not reference.text.strip() or not target.text.strip()
            or not clean_for_tts(reference) or not clean_for_tts(target)):
        return None
    text = f"{reference.text.strip()} {target.text.strip()}"
    return [Turn("user", [Special("tts"), text]), Turn("assistant", [Speech(tuple(given + codes))])], len(given)


def continue_turns(c: TaskContext) -> list[Turn] | None:
    chain = [c.row, *c.partners[:2]]
    if len(chain) < 2 or any(speech_tokens(r) is None or not clean_for_tts(r) for r in chain):
        return None
    n = int(c.rng.integers(2, len(chain) + 1))

    def render(row) -> list:  # one utterance, as text or as speech
        return [row.text] if c.rng.random() < 0.5 else [Speech(tuple(speech_tokens(row)))]

    parts = [render(r) for r in chain[:n]]
    return [Turn("user", [Special("continue"), *parts[0]]), Turn("assistant", [p for ps in parts[1:] for p in ps])]


def s2s_turns(c: TaskContext) -> list[Turn] | None:
    if not c.partners:
        return None
    question, answer = c.row, c.partners[0]
    q, a = speech_tokens(question), speech_tokens(answer)
    if q is None or a is None or not answer.text.strip() or not clean_for_tts(answer):
        return None
    # text first, then its speech: the spoken answer is guided by its own transcript
    return [Turn("user", [Special("chat"), Speech(tuple(q))]), Turn("assistant", [answer.text, Speech(tuple(a))])]


def chat_turns(c: TaskContext) -> list[Turn] | None:
    """A spoken turn answered: the prompt `unisono.modes.chat` builds (persona, earlier turns as
    text, this turn as audio); only the reply is learned."""
    from unisono.model.vocab import Audio
    from unisono.modes.chat import chat_turns

    dialogue = c.row.meta.get("dialogue") or {}
    reply = dialogue.get("reply")
    if not isinstance(reply, str) or not reply.strip():
        return None
    history = [Turn(role, [text]) for role, text in dialogue.get("history") or []]
    return chat_turns(dialogue.get("persona"), history, Audio(c.n_audio)) + [Turn("assistant", [reply.strip()])]


def text_turns(c: TaskContext) -> list[Turn] | None:
    if not c.row.text.strip():
        return None
    return [Turn("user", [Special("text")]), Turn("assistant", [c.row.text])]


TASKS: dict[str, Callable[[TaskContext], list[Turn] | None]] = {
    "asr": asr_turns,
    "tts": tts_turns,
    "tts-instruct": lambda c: tts_turns(c, instructive=True),
    "tts-prompted": lambda c: (prompted_tts_turns(c) or (None,))[0],
    "continue": continue_turns,
    "s2s": s2s_turns,
    "text": text_turns,
    "chat": chat_turns,
}
AUDIO_TASKS = {"asr", "chat"}  # tasks whose prompt holds the row's audio
PARTNER_KEYS = {"continue": "speaker", "tts-prompted": "speaker", "s2s": "conversation"}  # rows are paired on this field


def build_example(task: str, context: TaskContext, vocab: Vocab, row_index: int) -> Example | None:
    given = 0
    if task == "tts-prompted":  # the prompt's speech is context, not a target
        built = prompted_tts_turns(context)
        turns, given = built if built else (None, 0)
    else:
        turns = TASKS[task](context)
    if turns is None:
        return None
    encoded = vocab.encode_prompt(turns, add_generation_prompt=False)
    target_start = encoded.target_start + (1 + given if given else 0)  # past <|speech_start|> and the given tokens
    return Example(encoded.ids, target_start, task, row_index if task in AUDIO_TASKS else None)


def check_tasks(weights: dict[str, float]) -> None:
    unknown = set(weights) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; known: {', '.join(TASKS)}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"the task mix {weights} has no positive weight")
