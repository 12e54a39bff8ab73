"""Voice activity: silero-vad speech regions, grouped into complete utterances of bounded length.

    audio (16 kHz) ─► silero-vad (32 ms windows) ─► speech regions
                   ─► regions longer than the limit are split at their longest inner pause
                   ─► neighbours merged while the group stays within max_segment_s
                   ─► Spans (seconds), each <= max_segment_s, cut in pauses, never inside a word
"""

from __future__ import annotations

from dataclasses import dataclass
import threading
from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Span:
    start: float  # seconds
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class VADConfig:
    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30
    max_segment_s: float = 30.0
    # Pauses longer than this always end an utterance, even if the merged group would fit.
    max_merge_gap_s: float = 2.0


@lru_cache(maxsize=1)
def _silero() -> torch.nn.Module:
    from silero_vad import load_silero_vad

    return load_silero_vad(onnx=False)


# silero-vad keeps recurrent state inside the model: two threads running the one instance at once
# corrupt it (a server transcribing for several clients crashed with a segmentation fault)
_SILERO_LOCK = threading.Lock()


def speech_regions(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, config: VADConfig | None = None) -> list[Span]:
    """Raw silero-vad speech regions; none longer than config.max_segment_s."""
    from silero_vad import get_speech_timestamps

    config = config or VADConfig()
    if sample_rate not in (8000, 16000):
        raise ValueError(f"silero-vad takes 8 or 16 kHz audio, got {sample_rate} Hz; resample with unisono.audio.io.prepare")
    model = _silero()
    with _SILERO_LOCK:
        model.reset_states()
        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            model,
            threshold=config.threshold,
            sampling_rate=sample_rate,
            min_speech_duration_ms=config.min_speech_ms,
            min_silence_duration_ms=config.min_silence_ms,
            speech_pad_ms=config.speech_pad_ms,
            # silero splits an over-long region at its longest pause; leave room for the padding
            max_speech_duration_s=config.max_segment_s - 2 * config.speech_pad_ms / 1000,
        )
    return [Span(s["start"] / sample_rate, s["end"] / sample_rate) for s in stamps]


def merge_regions(regions: list[Span], max_segment_s: float, max_gap_s: float) -> list[Span]:
    """Greedily join consecutive regions while the joined span fits in max_segment_s."""
    merged: list[Span] = []
    for r in regions:
        if merged and r.end - merged[-1].start <= max_segment_s and r.start - merged[-1].end <= max_gap_s:
            merged[-1] = Span(merged[-1].start, r.end)
        else:
            merged.append(r)
    return merged


def speech_segments(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    max_segment_s: float = 30.0,
    threshold: float = 0.5,
    config: VADConfig | None = None,
) -> list[Span]:
    """Complete utterances of at most max_segment_s seconds, in order; [] for no speech."""
    config = config or VADConfig(threshold=threshold, max_segment_s=max_segment_s)
    regions = speech_regions(audio, sample_rate, config)
    duration = len(audio) / sample_rate
    spans = merge_regions(regions, config.max_segment_s, config.max_merge_gap_s)
    return [Span(round(max(0.0, s.start), 3), round(min(duration, s.end), 3)) for s in spans]


__all__ = ["Span", "VADConfig", "merge_regions", "speech_regions", "speech_segments"]


class StreamingVAD:
    """silero-vad on audio that arrives in pieces (a live microphone): where speech starts and
    where it stops, in samples since the stream began. With `pause_ms`, it also says when the
    speaker has been quiet that long ("pause": the turn may be ending) and when they go on
    before the turn ended ("resume"), so a caller can start answering before the silence that
    ends the turn is over.

    Each stream owns its model instance: silero-vad keeps recurrent state between windows, so
    two streams must never share one."""

    WINDOW = 512  # samples at 16 kHz (32 ms): silero-vad's window

    def __init__(self, threshold: float = 0.5, min_silence_ms: int = 500, speech_pad_ms: int = 30,
                 pause_ms: int | None = None):
        from silero_vad import VADIterator, load_silero_vad

        self._iterator = VADIterator(load_silero_vad(onnx=True), threshold=threshold, sampling_rate=SAMPLE_RATE,
                                     min_silence_duration_ms=min_silence_ms, speech_pad_ms=speech_pad_ms)
        self._pause_samples = None if pause_ms is None else pause_ms * SAMPLE_RATE // 1000
        self._rest = np.zeros(0, np.float32)
        self.speaking = False
        self.paused = False

    def feed(self, audio: np.ndarray) -> list[tuple[str, int]]:
        """16 kHz float samples in; ("start" | "pause" | "resume" | "end", sample) for each change
        they complete."""
        audio = np.concatenate([self._rest, np.asarray(audio, np.float32)])
        n = len(audio) // self.WINDOW * self.WINDOW
        self._rest = audio[n:]
        events = []
        for i in range(0, n, self.WINDOW):
            change = self._iterator(torch.from_numpy(audio[i : i + self.WINDOW]))
            if change and "start" in change:
                self.speaking = True
                events.append(("start", int(change["start"])))
            elif change and "end" in change:
                self.speaking, self.paused = False, False
                events.append(("end", int(change["end"])))
            elif self._pause_samples is not None and self.speaking:
                quiet_since = self._iterator.temp_end  # 0 while the speaker is heard
                now = self._iterator.current_sample
                if not self.paused and quiet_since and now - quiet_since >= self._pause_samples:
                    self.paused = True
                    events.append(("pause", int(quiet_since)))
                elif self.paused and not quiet_since:
                    self.paused = False
                    events.append(("resume", int(now - self.WINDOW)))
        return events

    def reset(self) -> None:
        self._iterator.reset_states()
        self._rest = np.zeros(0, np.float32)
        self.speaking = self.paused = False


class TurnSegmenter:
    """A live stream cut into spoken turns: blocks of 16 kHz samples in (a microphone's 160 ms
    reads), each utterance out once the speaker has been quiet `min_silence_ms`, from its start
    to its end as the VAD places them. Only the audio since the last turn is kept, and at most
    `max_turn_s` of it: a turn that goes on longer is cut there."""

    def __init__(self, min_silence_ms: int = 500, threshold: float = 0.5, max_turn_s: float = 30.0):
        self.vad = StreamingVAD(threshold, min_silence_ms)
        self.max_samples = int(max_turn_s * SAMPLE_RATE)
        self._audio = np.zeros(0, np.float32)  # the stream from sample `_origin` on
        self._origin = 0
        self._start: int | None = None  # the current utterance's first sample

    def feed(self, block: np.ndarray) -> list[np.ndarray]:
        """Samples in; the turns they complete out."""
        block = np.asarray(block, np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, block])
        turns = []
        for change, sample in self.vad.feed(block):
            if change == "start":
                self._start = sample
            elif change == "end" and self._start is not None:
                turns.append(self._cut(sample))
        if self._start is None:  # silence: keep only what a starting utterance's padding can reach
            self._drop_before(self._origin + len(self._audio) - SAMPLE_RATE)
        elif self._origin + len(self._audio) - self._start >= self.max_samples:
            cut = self._start + self.max_samples
            turns.append(self._cut(cut))
            self._start = cut  # the rest of a long utterance is the next turn
        return turns

    def reset(self) -> None:
        """Forget the stream so far (the caller skipped some of it): the next block starts anew."""
        self.vad.reset()
        self._audio, self._origin, self._start = np.zeros(0, np.float32), 0, None

    def flush(self) -> np.ndarray | None:
        """At the end of the stream: the utterance still going on, if any."""
        if self._start is None:
            return None
        return self._cut(self._origin + len(self._audio))

    def _cut(self, end: int) -> np.ndarray:
        turn = self._audio[max(0, self._start - self._origin) : end - self._origin].copy()
        self._drop_before(end)
        self._start = None
        return turn

    def _drop_before(self, sample: int) -> None:
        if sample > self._origin:
            self._audio = self._audio[sample - self._origin :]
            self._origin = sample
