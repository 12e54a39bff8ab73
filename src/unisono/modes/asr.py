"""ASR mode: speech in, text out, decoded with MTP verification (greedy-identical, fewer passes).

    files ─► load_audio (16 kHz mono) ─► > 30 s? split with silero-vad into utterances <= 30 s
          (a file in which silero-vad hears no speech is not decoded: its text is empty)
          ─► segments sorted by length, batched ─► log-mel ─► encoder ─► adaptor
          ─► prompt  <|user|> <|asr|> [<|en|>] <|audio_start|> <|audio|>*N <|audio_end|> <|end|> <|assistant|>
          ─► generate (text tokens + <|end|> allowed) ─► text per segment ─► Transcript per file
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from unisono.decode.generate import GenerationConfig, generate
from unisono.decode.stats import DecodeStats
from unisono.model.vocab import Audio, Special, Turn

if TYPE_CHECKING:
    from unisono.model.unisono import Unisono

SAMPLE_RATE = 16000
MAX_SEGMENT_S = 30.0  # the encoder's window


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "text": self.text,
            "duration": round(self.duration, 3),
            "segments": [asdict(s) for s in self.segments],
            "stats": self.stats.summary(),
        }


@dataclass
class ASROptions:
    mtp: bool = True
    n_drafts: int | None = None  # MTP branches to draft with (None: all)
    language: str | None = None  # "en" / "zh" hint in the prompt; None: the model decides
    batch_size: int = 8
    max_new_tokens: int | None = None  # None: from the segment's duration
    vad_threshold: float = 0.5


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
def transcribe_segments(model: "Unisono", clips: Sequence[np.ndarray], options: ASROptions) -> tuple[list[str], list[DecodeStats]]:
    """Texts of clips no longer than 30 s each, batched; returned in input order."""
    from unisono.audio.features import batch_log_mel

    mel, mel_lengths = batch_log_mel(list(clips), n_mels=model.config.encoder.n_mels)
    feats, lengths = model.encode_audio(mel.to(model.device), mel_lengths.to(model.device))
    prompts = [model.vocab.encode_prompt(asr_prompt(int(n), options.language)) for n in lengths]
    L = max(len(p.ids) for p in prompts)
    ids = torch.full((len(prompts), L), model.vocab.pad_id, device=model.device)
    mask = torch.zeros(len(prompts), L, dtype=torch.bool, device=model.device)
    for b, p in enumerate(prompts):  # left padding: every row ends where generation starts
        ids[b, L - len(p.ids) :] = torch.tensor(p.ids, device=model.device)
        mask[b, L - len(p.ids) :] = True
    embeds = model.embed_prompt(ids, feats, lengths)
    longest = max(len(c) for c in clips) / SAMPLE_RATE
    config = GenerationConfig(
        max_new_tokens=options.max_new_tokens or _max_tokens(longest),
        mtp=options.mtp,
        n_drafts=options.n_drafts,
        stop_ids=(model.vocab.end_id,),
    )
    out = generate(model, embeds, mask, config, allowed=text_tokens_mask(model))
    return [model.vocab.decode_text(t) for t in out.tokens], out.row_stats


def split_long(audio: np.ndarray, threshold: float = 0.5) -> list[tuple[float, float]]:
    """(start, end) seconds of the pieces to decode: the whole clip if <= 30 s, else VAD utterances; none
    when silero-vad hears no speech at all (a recogniser reads words into silence and noise: the
    embedded model writes Chinese characters for a second of silence)."""
    from unisono.audio.vad import speech_segments

    duration = len(audio) / SAMPLE_RATE
    spans = speech_segments(audio, SAMPLE_RATE, max_segment_s=MAX_SEGMENT_S, threshold=threshold)
    if duration <= MAX_SEGMENT_S:
        return [(0.0, duration)] if spans else []
    return [(s.start, s.end) for s in spans]


def transcribe(
    model: "Unisono",
    audio: Any,
    *,
    mtp: bool = True,
    n_drafts: int | None = None,
    language: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Transcript | list[Transcript]:
    """Transcribe a file path, bytes, a 16 kHz mono float array, or a list of them.

    Returns one Transcript per input (a list for a list). Files over 30 s are split into
    complete utterances with silero-vad and carry segment timestamps. `progress` is called
    with the number of seconds of audio finished after each batch.
    """
    from unisono.audio.io import load_audio

    options = ASROptions(mtp=mtp, n_drafts=n_drafts, language=language, batch_size=batch_size, max_new_tokens=max_new_tokens)
    single = not isinstance(audio, (list, tuple))
    items = [audio] if single else list(audio)
    arrays, sources = [], []
    for item in items:
        if isinstance(item, np.ndarray):
            arrays.append(_check_array(item))
            sources.append(None)
        else:
            arrays.append(load_audio(item, sample_rate=SAMPLE_RATE))
            sources.append(str(item) if isinstance(item, (str, Path)) else None)

    # every piece of every file, decoded longest-first in batches (similar lengths pad least)
    pieces = [(i, s, e) for i, a in enumerate(arrays) for s, e in split_long(a, options.vad_threshold)]
    order = sorted(range(len(pieces)), key=lambda j: pieces[j][2] - pieces[j][1], reverse=True)
    texts: dict[int, str] = {}
    stats = [DecodeStats() for _ in arrays]
    for k in range(0, len(order), options.batch_size):
        chunk = order[k : k + options.batch_size]
        clips = [arrays[pieces[j][0]][int(pieces[j][1] * SAMPLE_RATE) : int(pieces[j][2] * SAMPLE_RATE)] for j in chunk]
        batch_texts, batch_stats = transcribe_segments(model, clips, options)
        texts.update(zip(chunk, batch_texts))
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
        ))
    return results[0] if single else results


def _check_array(audio: np.ndarray) -> np.ndarray:
    from unisono.audio.io import EmptyAudioError, InvalidAudioError

    audio = np.asarray(audio, dtype=np.float32)
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
