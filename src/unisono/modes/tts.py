"""TTS mode: text (with an instruction and a voice) in, speech out, streamed as it is decoded.

    text ─► sentences ─► for each: [<|system|> instruction <|end|>] <|user|> <|tts|> sentence <|end|>
                                   <|assistant|> <|speech_start|>          (the prompt format of training)
         ─► a decode session: speech tokens and <|speech_end|> allowed, sampled with
            repetition-aware sampling (CosyVoice's RAS), bounded by a length guard from the text
         ─► the codec's streaming detokenizer, in the voice's speaker embedding ─► 16 kHz audio

A sentence ends at <|speech_end|> (or <|end|>); a sentence that reaches its length guard instead
is cut there and reported in `Speech.warnings`, so a model that loops can never run forever.
`speak_stream` yields audio as it is decoded, sentence after sentence; `speak` gathers it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from unisono.decode.sampling import RepetitionAwareConfig, SamplingConfig
from unisono.decode.stats import DecodeStats
from unisono.model.vocab import Special, Turn

if TYPE_CHECKING:
    from unisono.decode.scheduler import Scheduler
    from unisono.model.unisono import Unisono

SAMPLE_RATE = 16000
VOICES_DIR = Path(__file__).resolve().parents[1] / "assets" / "voices"
DEFAULT_VOICE = "lj"  # LJSpeech's reader (public domain): 6 s of LJ001-0001
PAUSE_S = 0.15  # silence between sentences
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；])\s+|(?<=[。！？；])")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass
class TTSOptions:
    instruct: str | None = None  # free text: "Speak slowly and with a high voice."
    speed: float = 1.0  # said to the model in the instruction (slowly below 0.9, quickly above 1.12)
    temperature: float = 0.8
    top_k: int = 25  # CosyVoice's sampling settings
    top_p: float = 0.8
    seed: int | None = None
    repetition_aware: bool = True

    def __post_init__(self) -> None:
        if not 0.5 <= self.speed <= 2.0:
            raise ValueError(f"speed must be in [0.5, 2.0], got {self.speed}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError("top_k must be >= 0 and top_p in (0, 1]")

    def instruction(self) -> str | None:
        """The system turn: the caller's words, and the speed in the words training used."""
        pace = "slowly" if self.speed < 0.9 else "quickly" if self.speed > 1.12 else None
        parts = [self.instruct.strip()] if self.instruct and self.instruct.strip() else []
        if pace:
            parts.append(f"Speak {pace}.")
        return " ".join(parts) or None


@dataclass
class Speech:
    audio: np.ndarray  # float32 mono
    sample_rate: int
    sentences: list[str]
    tokens: list[list[int]]  # speech codes per sentence
    stats: DecodeStats = field(default_factory=DecodeStats)
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def split_sentences(text: str) -> list[str]:
    """Sentences to speak one at a time (a long text is streamed sentence by sentence)."""
    text = " ".join(text.split())
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def max_speech_tokens(sentence: str, token_rate: float = 25.0) -> int:
    """The length guard: more tokens than any natural reading of the sentence needs (English
    runs ~14 characters a second, Mandarin ~4-5 characters), so only a runaway reaches it."""
    han = len(_CJK.findall(sentence))
    seconds = 1.5 + 0.12 * (len(sentence) - han) + 0.45 * han
    return int(token_rate * seconds)


def voice_embedding(model: "Unisono", voice: Any = None) -> torch.Tensor:
    """The codec's speaker embedding of a voice: a named voice (assets/voices), an audio file, or
    16 kHz samples; None is the default voice."""
    from unisono.audio.io import load_audio

    codec = model.speech_codec
    if voice is None or (isinstance(voice, str) and not Path(voice).suffix and not Path(voice).exists()):
        name = voice or DEFAULT_VOICE
        path = VOICES_DIR / f"{name}.flac"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in VOICES_DIR.glob("*.flac")))
            raise ValueError(f"no voice named {name!r}: the named voices are {known}; or give a reference recording")
        voice = path
    audio = voice if isinstance(voice, np.ndarray) else load_audio(voice, SAMPLE_RATE)
    return codec.speaker_embedding(audio)


def tts_prompt(sentence: str, instruction: str | None) -> list[Turn]:
    turns = [Turn("system", [instruction])] if instruction else []
    return turns + [Turn("user", [Special("tts"), sentence])]


def _session_config(model: "Unisono", sentence: str, options: TTSOptions, index: int):
    from unisono.decode.session import SessionConfig

    vocab = model.vocab
    allowed = torch.zeros(vocab.size, dtype=torch.bool, device=model.device)
    allowed[vocab.speech_offset : vocab.speech_offset + vocab.n_speech] = True
    allowed[vocab.id("speech_end")] = True
    seed = None if options.seed is None else options.seed + index  # each sentence its own draw, reproducibly
    return SessionConfig(
        max_new_tokens=max_speech_tokens(sentence, model.speech_codec.config.tokenizer.token_rate),
        stop_ids=(vocab.id("speech_end"), vocab.end_id),
        sampling=SamplingConfig(temperature=options.temperature, top_k=options.top_k, top_p=options.top_p, seed=seed),
        allowed=allowed,
        repetition=RepetitionAwareConfig() if options.repetition_aware else None,
        mtp=False,
    )


@torch.no_grad()
def speak_stream(
    model: "Unisono",
    text: str,
    voice: Any = None,
    options: TTSOptions | None = None,
    scheduler: "Scheduler | None" = None,
    report: Callable[[Speech], None] | None = None,
) -> Iterator[np.ndarray]:
    """16 kHz float32 audio chunks as they are decoded. `voice`: see `voice_embedding`, or an
    embedding it made. With a running `scheduler` (a server's),
    each sentence is a request beside its other work. `report` receives the Speech record
    (tokens, stats, warnings; its audio left empty) once the text is spoken."""
    from unisono.decode.session import LENGTH, Session

    options = options or TTSOptions()
    sentences = split_sentences(text)
    if not sentences:
        raise ValueError("there is no text to speak")
    if model.vocab.n_speech == 0:
        raise ValueError("this model has no speech tokens: it cannot speak")
    codec = model.speech_codec
    speaker = voice if isinstance(voice, torch.Tensor) else voice_embedding(model, voice)
    record = Speech(np.zeros(0, np.float32), SAMPLE_RATE, sentences, [])
    instruction = options.instruction()
    start = torch.tensor([[model.vocab.id("speech_start")]], device=model.device)
    for index, sentence in enumerate(sentences):
        prompt = model.vocab.encode_prompt(tts_prompt(sentence, instruction))
        ids = torch.cat([torch.tensor([prompt.ids], device=model.device), start], dim=1)
        embeds = model.embed_prompt(ids)[0]
        config = _session_config(model, sentence, options, index)
        if scheduler is not None:
            request = scheduler.submit(embeds, config)
            tokens_in, session = request.tokens(), request.session
        else:
            session = Session(model, config)
            session.prefill(embeds)
            tokens_in, request = session.tokens(), None
        stream = codec.detokenizer_stream(speaker)
        codes: list[int] = []
        try:
            for token in tokens_in:
                code = token - model.vocab.speech_offset
                codes.append(code)
                chunk = stream.push([code])
                if len(chunk):
                    yield chunk
        finally:
            if request is not None:
                request.cancel()
        if request is not None and request.error:
            raise RuntimeError(f"speaking sentence {index + 1} failed: {request.error}")
        tail = stream.flush()
        if len(tail):
            yield tail
        if index < len(sentences) - 1:
            yield np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
        record.tokens.append(codes)
        record.stats = record.stats.merge(session.stats)
        if session.finish_reason == LENGTH:
            record.warnings.append(f"sentence {index + 1} reached its length guard ({config.max_new_tokens} speech "
                                   "tokens) without ending: cut there")
    if report is not None:
        report(record)


def speak(model: "Unisono", text: str, voice: Any = None, options: TTSOptions | None = None,
          scheduler: "Scheduler | None" = None) -> Speech:
    """Text to speech (see `speak_stream`): the whole waveform, and what was decoded."""
    records: list[Speech] = []
    chunks = list(speak_stream(model, text, voice, options, scheduler, report=records.append))
    speech = records[0]
    speech.audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return speech
