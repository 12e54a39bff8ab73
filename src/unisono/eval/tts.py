"""TTS evaluation: every system speaks the same sentences, one recogniser hears them all.

    sentences ─► system (unisono[:DIR] | piper) ─► 16 kHz audio ─► recogniser ─► WER against the sentence

Per system: WER (Whisper's English normaliser on both sides), how many sentences the system
ended by itself (a unisono model that reaches its length guard did not), and the real-time
factor of synthesis. A system is named as `unisono eval asr` names its systems: `unisono`
(the embedded model), `unisono:DIR`, `piper` (en_US-joe, the neural voice of the data engine).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from unisono.eval.metrics import ErrorCounts, count_errors, total
from unisono.eval.normalize import make_scoring

# Everyday sentences in no corpus of this project: what a user asks a TTS to say.
DEFAULT_SENTENCES = [
    "It was a bright cold day in April.",
    "The weather was warm, so we walked to the park.",
    "Please close the door when you leave.",
    "My sister bought a new red car yesterday.",
    "We will meet again at nine tomorrow morning.",
    "The children played in the garden after school.",
    "He read the letter twice and smiled.",
    "Turn left at the next corner.",
    "The train arrives at the station at noon.",
    "She opened the window to let in some air.",
]


@dataclass
class SystemResult:
    name: str
    items: list[dict] = field(default_factory=list)  # sentence, hypothesis, counts, seconds, audio_s, ended

    @property
    def counts(self) -> ErrorCounts:
        return total([ErrorCounts.from_dict(i["counts"]) for i in self.items])

    @property
    def wer(self) -> float:
        return self.counts.rate

    @property
    def ended(self) -> int | None:
        flags = [i["ended"] for i in self.items if i["ended"] is not None]
        return sum(flags) if flags else None

    @property
    def rtf(self) -> float:
        audio = sum(i["audio_s"] for i in self.items)
        return sum(i["seconds"] for i in self.items) / audio if audio else float("nan")


def synthesizer(spec: str, threads: int) -> tuple[str, Callable[[str, int], tuple[np.ndarray, bool | None]]]:
    """(label, speak(sentence, seed) -> (16 kHz audio, ended by itself or None))."""
    kind, _, option = spec.partition(":")
    if kind == "unisono":
        import torch

        from unisono.model.unisono import Unisono
        from unisono.modes.tts import TTSOptions, max_speech_tokens, speak

        torch.set_num_threads(threads)
        model = Unisono.load(option if option and option != "default" else None)

        def say(sentence: str, seed: int):
            s = speak(model, sentence, options=TTSOptions(seed=seed))
            ended = all(len(t) < max_speech_tokens(p) for t, p in zip(s.tokens, s.sentences))
            return s.audio, ended

        return (f"unisono:{option}" if option else "unisono"), say
    if kind == "piper":
        from unisono.data import neural_voices

        reason = neural_voices.missing("piper", "en")
        if reason:
            raise ValueError(reason)
        plain = {"rate": 1.0, "length_scale": 1.0, "noise_scale": 0.667, "noise_w_scale": 0.8, "semitones": 0.0}
        return "piper", lambda sentence, seed: (
            neural_voices.render("piper", neural_voices.PIPER_VOICE, "en", sentence, plain), None)
    raise ValueError(f"unknown TTS system {spec!r}: unisono, unisono:DIR or piper")


def evaluate(spec: str, sentences: list[str], recognizer, threads: int = 2, seed: int = 0) -> SystemResult:
    scoring = make_scoring("en")
    label, say = synthesizer(spec, threads)
    result = SystemResult(label)
    for i, sentence in enumerate(sentences):
        started = time.perf_counter()
        audio, ended = say(sentence, seed + i)
        seconds = time.perf_counter() - started
        hypothesis = recognizer.transcribe(audio, "en") if len(audio) else ""
        counts = count_errors(scoring.normalize(sentence), scoring.normalize(hypothesis), scoring.unit)
        result.items.append({"sentence": sentence, "hypothesis": hypothesis, "counts": counts.to_dict(),
                             "seconds": round(seconds, 4), "audio_s": round(len(audio) / 16000, 3), "ended": ended})
    return result
