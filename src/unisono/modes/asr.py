"""ASR mode: speech in, text out, decoded with MTP verification (greedy-identical, fewer passes).

    files ─► load_audio (16 kHz mono) ─► level: silence flagged, quiet input raised (audio.level)
          ─► silero-vad: speech in utterances <= 30 s; a clip of <= 30 s keeps 0.5 s around its
             speech (a file in which silero-vad hears no speech is not decoded: its text is empty)
          ─► segments sorted by length, batched ─► log-mel ─► encoder ─► adaptor
          ─► prompt  <|user|> <|asr|> [<|en|>] <|audio_start|> <|audio|>*N <|audio_end|> <|end|> <|assistant|>
          ─► a decode session per segment (text tokens + <|end|> allowed), the batch's sessions
             decoded together by a scheduler (the caller's, in a server) ─► Transcript per file
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from unisono.decode.sampling import SamplingConfig
from unisono.decode.stats import DecodeStats
from unisono.decode.text_stream import TextStream
from unisono.model.vocab import Audio, Special, Turn

if TYPE_CHECKING:
    from unisono.decode.scheduler import Scheduler
    from unisono.model.unisono import Unisono

SAMPLE_RATE = 16000
MAX_SEGMENT_S = 30.0  # the encoder's window
# Audio kept on each side of a short clip's speech. The embedded model was trained on clips with
# their natural margins: cut at silero-vad's tight edges, its AN4 CER rose from 0.24 to 0.42;
# with 0.5 s kept it is unchanged on AN4 and LJ001, while seconds of silence are no longer decoded.
SHORT_CLIP_CONTEXT_S = 0.5


@dataclass
class Segment:
    start: float  # seconds
    end: float
    text: str


@dataclass
class Transcript:
    text: str
    segments: list[Segment]
    duration: float  # seconds of audio
    stats: DecodeStats = field(default_factory=DecodeStats)
    source: str | None = None
    warnings: list[str] = field(default_factory=list)  # what about the input the reader should know

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "text": self.text,
            "duration": round(self.duration, 3),
            "segments": [asdict(s) for s in self.segments],
            "stats": self.stats.summary(),
            "warnings": list(self.warnings),
        }


@dataclass
class ASROptions:
    mtp: bool = True
    n_drafts: int | None = None  # MTP branches to draft with (None: all)
    language: str | None = None  # "en" / "zh" hint in the prompt; None: the model decides
    batch_size: int = 8
    max_new_tokens: int | None = None  # None: from the segment's duration
    vad_threshold: float = 0.5
    temperature: float = 0.0  # 0: greedy (MTP-verified); above 0: sampled, without MTP

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.n_drafts is not None and self.n_drafts < 1:
            raise ValueError(f"n_drafts must be at least 1 (or None: the model's choice), got {self.n_drafts}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1 (or None: from the duration), got {self.max_new_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.language not in (None, "en", "zh"):
            raise ValueError(f"language must be en, zh or None, got {self.language!r}")


def asr_prompt(n_audio_positions: int, language: str | None = None) -> list[Turn]:
    parts: list = [Special("asr")]
    if language:
        parts.append(Special(language))
    parts.append(Audio(n_audio_positions))
    return [Turn("user", parts)]


def text_tokens_mask(model: "Unisono") -> torch.Tensor:
    allowed = torch.zeros(model.vocab.size, dtype=torch.bool, device=model.device)
    allowed[: model.vocab.n_text] = True
    allowed[model.vocab.end_id] = True
    return allowed


def _max_tokens(duration_s: float) -> int:
    # fast speech is ~4 words/s; byte-level BPE rarely needs more than 3 tokens a word
    return int(min(448, 24 + 12 * duration_s))


@torch.no_grad()
def transcribe_segments(
    model: "Unisono",
    clips: Sequence[np.ndarray],
    options: ASROptions,
    scheduler: "Scheduler | None" = None,
    on_delta: Callable[[int, str], None] | None = None,
) -> tuple[list[str | None], list[DecodeStats], list[str | None]]:
    """Texts of clips no longer than 30 s each, returned in input order, with each clip's decode
    stats and error (None, or why its decoding failed: its text is then None).

    Each clip is a decode session (`decode.session`). With a `scheduler` (a running
    `decode.scheduler.Scheduler`) the sessions join whatever else it decodes; without one they
    are decoded here, together, by a scheduler of their own (one decoder pass per step for all
    of them). `on_delta(i, text)` receives clip i's text as it grows, clip after clip."""
    from unisono.audio.features import batch_log_mel
    from unisono.decode.scheduler import Scheduler, SchedulerConfig
    from unisono.decode.session import SessionConfig

    mel, mel_lengths = batch_log_mel(list(clips), n_mels=model.config.encoder.n_mels)
    feats, lengths = model.encode_audio(mel.to(model.device), mel_lengths.to(model.device))
    own = scheduler is None
    if own:
        scheduler = Scheduler(model, SchedulerConfig(max_batch=len(clips), max_batch_tokens=1 << 30))
    allowed = text_tokens_mask(model)
    requests = []
    for b, n in enumerate(lengths):
        prompt = model.vocab.encode_prompt(asr_prompt(int(n), options.language))
        embeds = model.embed_prompt(torch.tensor([prompt.ids], device=model.device), feats[b : b + 1], lengths[b : b + 1])[0]
        config = SessionConfig(
            max_new_tokens=options.max_new_tokens or _max_tokens(len(clips[b]) / SAMPLE_RATE),
            stop_ids=(model.vocab.end_id,),
            allowed=allowed,
            sampling=SamplingConfig(temperature=options.temperature),
            mtp=options.mtp,
            n_drafts=options.n_drafts,
        )
        requests.append(scheduler.submit(embeds, config))
    if own:
        scheduler.run_until_idle()
    texts = []
    try:
        for b, request in enumerate(requests):
            stream = TextStream(model.vocab)
            for token in request.tokens():
                delta = stream.push(token)
                if delta and on_delta is not None:
                    on_delta(b, delta)
            if request.error:  # this clip alone failed: the others keep their text
                texts.append(None)
                continue
            delta = stream.finish()
            if delta and on_delta is not None:
                on_delta(b, delta)
            texts.append(model.vocab.decode_text(request.output))
    finally:  # a caller that stops early (an error, a client gone) leaves no work behind
        for request in requests:
            request.cancel()
    return texts, [r.session.stats for r in requests], [r.error for r in requests]


def split_long(audio: np.ndarray, threshold: float = 0.5) -> list[tuple[float, float]]:
    """(start, end) seconds of the pieces to decode: silero-vad's utterances (<= 30 s each); none
    when it hears no speech at all (a recogniser reads words into silence and noise: the
    embedded model writes Chinese characters for a second of silence).

    A clip of at most 30 s keeps SHORT_CLIP_CONTEXT_S of audio on each side of its speech (never
    past the middle of a pause between two utterances), so a clip spoken throughout is decoded
    whole and one that is mostly silence is not decoded where it is silent."""
    from unisono.audio.vad import speech_segments

    duration = len(audio) / SAMPLE_RATE
    spans = speech_segments(audio, SAMPLE_RATE, max_segment_s=MAX_SEGMENT_S, threshold=threshold)
    if duration > MAX_SEGMENT_S:
        return [(s.start, s.end) for s in spans]
    pieces = []
    for i, s in enumerate(spans):
        lo = s.start - SHORT_CLIP_CONTEXT_S if i == 0 else max(s.start - SHORT_CLIP_CONTEXT_S, (spans[i - 1].end + s.start) / 2)
        hi = s.end + SHORT_CLIP_CONTEXT_S if i == len(spans) - 1 else min(s.end + SHORT_CLIP_CONTEXT_S, (s.end + spans[i + 1].start) / 2)
        pieces.append((round(max(0.0, lo), 3), round(min(duration, hi), 3)))
    return pieces


def transcribe(
    model: "Unisono",
    audio: Any,
    *,
    mtp: bool = True,
    n_drafts: int | None = None,
    language: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    progress: Callable[[int], None] | None = None,
    scheduler: "Scheduler | None" = None,
    on_delta: Callable[[int, str], None] | None = None,
) -> Transcript | list[Transcript]:
    """Transcribe a file path, bytes, a binary file object, a 16 kHz mono array (float in [-1, 1],
    or integer PCM), or a list of them.

    Returns one Transcript per input (a list for a list). Speech is found with silero-vad: files
    over 30 s are split into complete utterances and carry segment timestamps; silence and noise
    are not decoded. A very quiet input is raised to a normal level first. What the caller should
    know about an input (silence, no speech heard, quiet input, channels that cancel) is listed in
    `Transcript.warnings` and issued as an `AudioWarning`. `progress` is called with the number
    of seconds of audio finished after each batch.

    With a `scheduler` (a running `decode.scheduler.Scheduler` on this model), every piece is a
    request of its own, decoded beside the scheduler's other work: a server's way. The pieces
    are then taken in time order, and `on_delta(i, text)` receives input i's transcript as it
    grows (the same text, piece by piece, that its Transcript.text ends up holding).
    """
    from unisono.audio.io import AudioWarning
    from unisono.audio.level import adjust_level

    options = ASROptions(mtp=mtp, n_drafts=n_drafts, language=language, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, temperature=temperature)
    if model.mtp is not None and n_drafts is not None and n_drafts > model.mtp.n_branches:
        raise ValueError(f"n_drafts must be in 1..{model.mtp.n_branches} (the model's MTP branches), got {n_drafts}")
    single = not isinstance(audio, (list, tuple))
    items = [audio] if single else list(audio)
    arrays, silent, sources, notes = [], [], [], []
    for item in items:  # every input is read and checked before any decoding
        array, item_notes = _read_input(item)
        level = adjust_level(array)
        arrays.append(level.audio)
        silent.append(level.silent)
        sources.append(str(item) if isinstance(item, (str, Path)) else None)
        notes.append(item_notes + ([level.warning] if level.warning else []))

    # every piece of every file, decoded longest-first in batches (similar lengths pad least)
    pieces = []
    for i, a in enumerate(arrays):
        spans = [] if silent[i] else split_long(a, options.vad_threshold)
        if not silent[i] and not spans:
            notes[i].append("silero-vad heard no speech: the transcript is empty")
        pieces += [(i, s, e) for s, e in spans]
    order = list(range(len(pieces)))
    if scheduler is None:  # a fixed batch pads least when its pieces have similar lengths
        order.sort(key=lambda j: pieces[j][2] - pieces[j][1], reverse=True)
    texts: dict[int, str] = {}
    stats = [DecodeStats() for _ in arrays]
    streamed = [""] * len(arrays)  # input i's transcript as on_delta has given it so far

    def piece_delta(chunk: list[int]) -> Callable[[int, str], None] | None:
        if on_delta is None:
            return None

        def delta(b: int, piece_text: str) -> None:
            # the transcript so far is joined exactly as Transcript.text will be, so the deltas
            # of an input add up to its final text
            j = chunk[b]
            i = pieces[j][0]
            texts[j] = texts.get(j, "") + piece_text
            done = [texts.get(m, "") for m, (fi, _, _) in enumerate(pieces) if fi == i and m <= j]
            now = " ".join(t for t in done if t).strip()
            if now.startswith(streamed[i]) and len(now) > len(streamed[i]):
                on_delta(i, now[len(streamed[i]):])
                streamed[i] = now
        return delta

    for k in range(0, len(order), options.batch_size):
        chunk = order[k : k + options.batch_size]
        clips = [arrays[pieces[j][0]][int(pieces[j][1] * SAMPLE_RATE) : int(pieces[j][2] * SAMPLE_RATE)] for j in chunk]
        batch_texts, batch_stats, batch_errors = transcribe_segments(model, clips, options, scheduler, piece_delta(chunk))
        for j, text, error in zip(chunk, batch_texts, batch_errors):
            texts[j] = text or ""
            if error:  # one failing piece never stops the others: its input says what went wrong
                i, start, end = pieces[j]
                notes[i].append(f"decoding {start:.1f}-{end:.1f} s failed ({error}): its text is missing")
        for j, s in zip(chunk, batch_stats):
            stats[pieces[j][0]] = stats[pieces[j][0]].merge(s)
        if progress:
            progress(sum(pieces[j][2] - pieces[j][1] for j in chunk))

    results = []
    for i, a in enumerate(arrays):
        segs = [Segment(round(s, 3), round(e, 3), texts[j]) for j, (fi, s, e) in enumerate(pieces) if fi == i]
        segs = [s for s in segs if s.text] or segs[:1]
        results.append(Transcript(
            text=" ".join(s.text for s in segs if s.text).strip(),
            segments=segs,
            duration=len(a) / SAMPLE_RATE,
            stats=stats[i],
            source=sources[i],
            warnings=notes[i],
        ))
        for note in notes[i]:
            warnings.warn(f"{sources[i]}: {note}" if sources[i] else note, AudioWarning, stacklevel=3)
    return results[0] if single else results


def _read_input(item: Any) -> tuple[np.ndarray, list[str]]:
    """16 kHz mono float32 samples of one input, and the warnings reading it raised."""
    from unisono.audio.io import AudioWarning, load_audio

    if isinstance(item, np.ndarray):
        return _check_array(item), []
    if not isinstance(item, (str, Path, bytes, bytearray)) and not hasattr(item, "read"):
        raise TypeError(
            f"cannot transcribe a {type(item).__name__}: give a path, bytes, a binary file object or a 16 kHz float array"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AudioWarning)
        audio = load_audio(item, sample_rate=SAMPLE_RATE)
    for w in caught:  # anything else is passed on untouched
        if not issubclass(w.category, AudioWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return audio, [str(w.message).removeprefix(f"{item}: ") for w in caught if issubclass(w.category, AudioWarning)]


def _check_array(audio: np.ndarray) -> np.ndarray:
    from unisono.audio.io import EmptyAudioError, InvalidAudioError

    audio = np.asarray(audio)
    if np.issubdtype(audio.dtype, np.integer):  # integer PCM, as soundfile or scipy read it: full scale is the type's maximum
        audio = audio.astype(np.float32) / np.iinfo(audio.dtype).max
    audio = audio.astype(np.float32, copy=False)
    if audio.ndim != 1:
        raise InvalidAudioError(f"expected a 1-D 16 kHz mono array, got shape {audio.shape}; load files with load_audio")
    if audio.size == 0:
        raise EmptyAudioError("the audio array is empty")
    if not np.isfinite(audio).all():
        raise InvalidAudioError("the audio array holds NaN or inf samples")
    return audio


# ---- output formats -------------------------------------------------------------------------
def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(t: Transcript) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate((s for s in t.segments if s.text), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in t.segments if s.text]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_json(t: Transcript) -> str:
    return json.dumps(t.to_dict(), ensure_ascii=False, indent=2)


FORMATS: dict[str, Callable[[Transcript], str]] = {
    "txt": lambda t: t.text + "\n",
    "json": to_json,
    "srt": to_srt,
    "vtt": to_vtt,
}
