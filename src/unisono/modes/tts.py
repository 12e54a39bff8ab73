"""TTS mode: text (with an instruction and a voice) in, speech out, streamed as it is decoded.

    text ─► sentences ─► for each: [<|system|> instruction <|end|>] <|user|> <|tts|> [voice text] sentence <|end|>
                                   <|assistant|> <|speech_start|> [voice tokens]   (the prompt format of training)
         ─► a decode session: speech tokens and <|speech_end|> allowed, sampled with
            repetition-aware sampling (CosyVoice's RAS), bounded by a length guard from the text
         ─► the codec's streaming detokenizer, in the voice's speaker embedding ─► 16 kHz audio

A sentence ends at <|speech_end|> (or <|end|>); a sentence that reaches its length guard instead
is cut there and reported in `Speech.warnings`, so a model that loops can never run forever.
`speak_stream` yields audio as it is decoded, sentence after sentence; `speak` gathers it.

A voice is a speaker embedding for the detokenizer (a named voice or a reference recording). A
reference given with its transcript (`voice_text`) is also a voice prompt, as in CosyVoice and
VALL-E: its text opens the user turn and its speech tokens open the answer, so the model goes on
speaking in it (the `tts-prompted` training task); only the new speech is played.
"""

from __future__ import annotations

import re
import unicodedata
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
MAX_VOICE_PROMPT_S = 20.0  # a voice prompt's transcript must cover all of it; longer ones crowd the context
PAUSE_S = 0.15  # silence between sentences
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；])\s+|(?<=[。！？；])")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_KNOWN_INSTRUCTION = re.compile(r"\b(slow|slowly|quick|quickly|fast|pace|low|high|pitch|voice)\b", re.IGNORECASE)
MAX_SENTENCE_CHARS = 300  # longer sentences are cut at a comma or space: training rows are ~30 s at most
MAX_SENTENCE_HAN = 100
NATURAL_RATE = {"en": 2.7, "zh": 4.5}  # units a second of unhurried speech (words; Han characters)


@dataclass
class TTSOptions:
    instruct: str | None = None  # free text: "Speak slowly and with a high voice."
    voice_text: str | None = None  # the reference recording's transcript: makes the reference a voice prompt
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


def _speakable(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def _cut(sentence: str, limit: int) -> list[str]:
    """A sentence longer than `limit` characters, cut at its last comma (else space) before the limit."""
    pieces = []
    while len(sentence) > limit:
        window = sentence[:limit]
        at = max(window.rfind(mark) for mark in (",", "，", "、", ":", "：")) + 1
        if at <= limit // 3:
            at = window.rfind(" ") + 1
        if at <= limit // 3:
            at = limit
        pieces.append(sentence[:at].strip())
        sentence = sentence[at:].strip()
    return pieces + [sentence]


def split_sentences(text: str) -> list[str]:
    """Sentences to speak one at a time (a long text is streamed sentence by sentence). A sentence
    longer than the model was trained on is cut at a comma or a space; a piece with no letter or
    digit (punctuation, emoji) is not spoken."""
    text = " ".join(text.split())
    out = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip() if sentence else ""
        limit = MAX_SENTENCE_HAN if _CJK.search(sentence) else MAX_SENTENCE_CHARS
        out += [piece for piece in _cut(sentence, limit) if _speakable(piece)]
    return out


def heard_text(text: str, spans: list, audio_end_ms: float) -> str:
    """The words of a spoken answer a listener heard in its first `audio_end_ms`: every sentence
    whose audio had ended by then, and of the sentence being spoken, its share of words (Han
    characters) by time. `spans`: (sentence, start ms, end ms) of the sentences spoken so far
    (`speak_stream`'s `on_sentence` marks them); a sentence after them (the answer stopped while it
    was being spoken) is timed at a natural pace."""
    kept = []
    for index, sentence in enumerate(split_sentences(text)):
        han = bool(_CJK.search(sentence))
        units = list(sentence) if han else sentence.split()
        if index < len(spans):
            start, end = spans[index][1], spans[index][2]
        elif index == len(spans):
            start = spans[-1][2] if spans else 0.0
            end = start + 1000 * len(units) / NATURAL_RATE["zh" if han else "en"]
        else:
            break
        if audio_end_ms >= end:
            kept.append(sentence)
            continue
        n = int(len(units) * max(0.0, audio_end_ms - start) / max(end - start, 1.0))
        if n:
            kept.append(("" if han else " ").join(units[:n]))
        break
    return " ".join(kept)


def text_warnings(text: str, instruction: str | None) -> list[str]:
    """What the model was not trained for, said rather than refused: letters of scripts other than
    Latin and Han, and an instruction with none of the controls training used (pace, pitch)."""
    warnings = []
    foreign = sorted({unicodedata.name(ch, "?").split()[0] for ch in text
                      if ch.isalpha() and not ch.isascii() and not _CJK.match(ch)
                      and not unicodedata.name(ch, "").startswith(("LATIN", "CJK", "FULLWIDTH"))})
    if foreign:
        warnings.append(f"the model speaks English and Mandarin; letters in other scripts ({', '.join(foreign)}) "
                        "are read as best it can")
    if instruction and not _KNOWN_INSTRUCTION.search(instruction):
        warnings.append(f"the instruction {instruction!r} asks for none of the controls the model was trained on "
                        "(speaking rate: slowly / quickly; pitch: a low / high voice); it is passed on as it is")
    return warnings


def max_speech_tokens(sentence: str, token_rate: float = 25.0) -> int:
    """The length guard: more tokens than any natural reading of the sentence needs (English
    runs ~14 characters a second, Mandarin ~4-5 characters), so only a runaway reaches it."""
    han = len(_CJK.findall(sentence))
    seconds = 1.5 + 0.12 * (len(sentence) - han) + 0.45 * han
    return int(token_rate * seconds)


def is_named_voice(voice: Any) -> bool:
    return voice is None or (isinstance(voice, str) and not Path(voice).suffix and not Path(voice).exists())


def voice_audio(voice: Any = None) -> np.ndarray:
    """16 kHz samples of a voice: a named voice (assets/voices), an audio file, or samples; None
    is the default voice."""
    from unisono.audio.io import load_audio

    if is_named_voice(voice):
        name = voice or DEFAULT_VOICE
        path = VOICES_DIR / f"{name}.flac"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in VOICES_DIR.glob("*.flac")))
            raise ValueError(f"no voice named {name!r}: the named voices are {known}; or give a reference recording")
        voice = path
    return np.asarray(voice, np.float32) if isinstance(voice, np.ndarray) else load_audio(voice, SAMPLE_RATE)


def voice_embedding(model: "Unisono", voice: Any = None) -> torch.Tensor:
    """The codec's speaker embedding of a voice (see `voice_audio`)."""
    return model.speech_codec.speaker_embedding(voice_audio(voice))


def voice_prompt(model: "Unisono", voice: Any, text: str) -> list[int]:
    """The speech tokens of a reference recording whose transcript is `text`."""
    if is_named_voice(voice) or isinstance(voice, torch.Tensor):
        raise ValueError("a voice transcript needs the reference recording itself (a file or samples), "
                         "not a named voice or an embedding")
    if not text.strip():
        raise ValueError("the voice transcript is empty")
    audio = voice_audio(voice)
    seconds = len(audio) / SAMPLE_RATE
    if seconds > MAX_VOICE_PROMPT_S:
        raise ValueError(f"a voice prompt may be at most {MAX_VOICE_PROMPT_S:.0f} s (this one is {seconds:.0f} s): its "
                         "transcript must cover all of it; cut a sentence or two, or leave out the transcript")
    codes = model.speech_codec.tokenize(audio)
    return [int(c) for c in codes.tolist()]


def tts_prompt(sentence: str, instruction: str | None, voice_text: str | None = None) -> list[Turn]:
    turns = [Turn("system", [instruction])] if instruction else []
    text = f"{voice_text.strip()} {sentence}" if voice_text else sentence
    return turns + [Turn("user", [Special("tts"), text])]


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
    on_sentence: Callable[[int, str], None] | None = None,
) -> Iterator[np.ndarray]:
    """16 kHz float32 audio chunks as they are decoded. `voice`: see `voice_embedding`, or an
    embedding it made. With a running `scheduler` (a server's),
    each sentence is a request beside its other work. `report` receives the Speech record
    (tokens, stats, warnings; its audio left empty) once the text is spoken; `on_sentence(i,
    sentence)` is called once sentence i's audio has all been yielded (before the pause after it),
    so a caller can tell which words a stretch of audio holds."""
    from unisono.decode.session import LENGTH, Session

    options = options or TTSOptions()
    sentences = split_sentences(text)
    if not sentences:
        raise ValueError("there is no text to speak" + (" (no letter or digit in it)" if text.strip() else ""))
    if model.vocab.n_speech == 0:
        raise ValueError("this model has no speech tokens: it cannot speak")
    codec = model.speech_codec
    given = voice_prompt(model, voice, options.voice_text) if options.voice_text is not None else []
    speaker = voice if isinstance(voice, torch.Tensor) else voice_embedding(model, voice)
    instruction = options.instruction()
    record = Speech(np.zeros(0, np.float32), SAMPLE_RATE, sentences, [], warnings=text_warnings(text, options.instruct))
    start = torch.tensor([[model.vocab.id("speech_start")] + [model.vocab.speech_offset + c for c in given]],
                         device=model.device)
    for index, sentence in enumerate(sentences):
        prompt = model.vocab.encode_prompt(tts_prompt(sentence, instruction, options.voice_text))
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
        if on_sentence is not None:
            on_sentence(index, sentence)
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
