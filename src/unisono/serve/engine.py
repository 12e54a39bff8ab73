"""The model a server holds, and the one scheduler every request decodes through.

Request handlers run the engine's blocking calls in worker threads: audio is read and encoded
there, and the decoder work joins the scheduler's batch, so many clients share each decoder
pass (continuous batching) while the event loop stays free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

from unisono.audio.io import SAMPLE_RATE, encode_audio, load_audio
from unisono.decode.sampling import SamplingConfig
from unisono.decode.scheduler import Request, Scheduler, SchedulerConfig
from unisono.decode.session import LENGTH, SessionConfig
from unisono.decode.stats import DecodeStats
from unisono.decode.text_stream import TextStream
from unisono.modes.asr import MAX_SEGMENT_S, Transcript, text_tokens_mask

ChatPart = Union[str, np.ndarray]  # text, or 16 kHz mono audio
PCM_RATE = 24000  # OpenAI's pcm16 on the wire


class PCM24:
    """16 kHz float chunks in, pcm16 bytes at 24 kHz out, continuous across chunks (one per stream)."""

    def __init__(self) -> None:
        import soxr

        self._resampler = soxr.ResampleStream(SAMPLE_RATE, PCM_RATE, 1, dtype="float32")

    def __call__(self, chunk: np.ndarray) -> bytes:
        return encode_audio(self._resampler.resample_chunk(chunk), PCM_RATE, "pcm")

    def flush(self) -> bytes:
        """The resampler's last samples, once no chunk will follow."""
        return encode_audio(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True), PCM_RATE, "pcm")


@dataclass
class Reply:
    text: str
    finish_reason: str  # stop | length
    prompt_tokens: int
    completion_tokens: int
    stats: DecodeStats


@dataclass
class ChatTurn:
    role: str  # system, user, assistant
    parts: list[ChatPart]


class Engine:
    def __init__(self, model: Any, name: str, scheduler: SchedulerConfig | None = None):
        self.model, self.name = model, name
        self.scheduler = Scheduler(model, scheduler).start()
        self._text_mask = text_tokens_mask(model)
        self._can_speak: bool | None = None

    def close(self) -> None:
        self.scheduler.close()

    # ---- what this model can do (the modes plug in here as they land) -------------------------
    @property
    def can_transcribe(self) -> bool:
        return True

    @property
    def can_speak(self) -> bool:
        """The model has speech tokens and its checkpoint a codec to turn them into audio."""
        if self._can_speak is None:
            try:
                self._can_speak = self.model.vocab.n_speech > 0 and self.model.speech_codec is not None
            except (ValueError, OSError):
                self._can_speak = False
        return self._can_speak

    @property
    def can_translate(self) -> bool:
        return False  # no speech-to-English translation task in the vocabulary yet

    @property
    def active_sessions(self) -> int:
        return self.scheduler.running + self.scheduler.waiting

    # ---- blocking work, called from worker threads ----------------------------------------------
    def read_audio(self, data: bytes, max_audio_s: float) -> np.ndarray:
        """16 kHz mono samples of an uploaded file (AudioError subclasses for bad input)."""
        return load_audio(data, SAMPLE_RATE, max_duration_s=max_audio_s)

    def transcribe(self, audio: np.ndarray, *, language: str | None = None, temperature: float = 0.0,
                   on_delta: Callable[[str], None] | None = None) -> Transcript:
        return self.model.transcribe(
            audio, language=language, temperature=temperature, scheduler=self.scheduler,
            on_delta=(lambda i, delta: on_delta(delta)) if on_delta is not None else None,
        )

    @torch.no_grad()
    def start_chat(self, turns: Sequence[ChatTurn], *, max_tokens: int, sampling: SamplingConfig) -> tuple[Request, int]:
        """Queue a chat reply (text) to `turns`: the request its tokens come from, and the prompt's length."""
        clips = [p for t in turns for p in t.parts if isinstance(p, np.ndarray)]
        for clip in clips:
            if len(clip) > MAX_SEGMENT_S * SAMPLE_RATE:
                raise ValueError(f"an input_audio part is {len(clip) / SAMPLE_RATE:.1f} s long; a chat turn takes "
                                 f"at most {MAX_SEGMENT_S:.0f} s of audio (transcribe longer audio instead)")
            if len(clip) == 0:
                raise ValueError("an input_audio part holds no samples")
        from unisono.modes.chat import embed_turns

        embeds, n_prompt = embed_turns(self.model, turns)
        config = SessionConfig(max_new_tokens=max_tokens, stop_ids=(self.model.vocab.end_id,),
                               sampling=sampling, allowed=self._text_mask)
        return self.scheduler.submit(embeds, config), n_prompt

    def reply(self, turns: Sequence[ChatTurn], *, max_tokens: int, sampling: SamplingConfig,
              emit: Callable[[str], None]) -> Reply:
        """The model's text reply to `turns`, handed to `emit` as it grows (blocking: call it from a
        worker thread). An exception from `emit` (the reader is gone) cancels the decoding."""
        request, n_prompt = self.start_chat(turns, max_tokens=max_tokens, sampling=sampling)
        text = TextStream(self.model.vocab)
        try:
            for token in request.tokens():
                delta = text.push(token)
                if delta:
                    emit(delta)
            if request.error:
                raise RuntimeError(request.error)
            rest = text.finish()
            if rest:
                emit(rest)
        finally:
            request.cancel()
        return Reply(text.text, "length" if request.finish_reason == LENGTH else "stop", n_prompt,
                     len(request.output), request.session.stats)

    # ---- speech ---------------------------------------------------------------------------------
    def voice(self, voice: Any) -> torch.Tensor:
        """A voice's speaker embedding (ValueError naming the known voices for an unknown one)."""
        from unisono.modes.tts import voice_embedding

        return voice_embedding(self.model, voice)

    def speak(self, text: str, speaker: torch.Tensor, options: Any, emit: Callable[[Any], None],
              sentences: bool = False) -> Any:
        """Speak `text`, handing 16 kHz audio chunks to `emit` as they are decoded (blocking: call it
        from a worker thread); the Speech record (tokens, stats, warnings) when done. With
        `sentences`, a `SentenceEnd` is emitted after each sentence's last chunk."""
        from unisono.modes.tts import speak_stream

        records: list = []
        marks = (lambda index, sentence: emit(SentenceEnd(index, sentence))) if sentences else None
        for chunk in speak_stream(self.model, text, speaker, options, self.scheduler, report=records.append,
                                  on_sentence=marks):
            emit(chunk)
        return records[0]


@dataclass
class SentenceEnd:
    """In a stream of audio chunks: sentence `index` (its text) has been spoken up to here."""

    index: int
    text: str
