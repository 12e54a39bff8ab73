"""Fair speed: the same clips, the same thread count, warm-up excluded, the median of repeats.

Real-time factor (RTF) = processing seconds / audio seconds (below 1: faster than real time).
Absolute RTFs depend on the machine and its load, so each is also given as a ratio to a named
reference system measured in the same run on the same clips (SPEC §4): that ratio is the number
to compare across machines.

Audio is decoded from its files once, before any timing: only recognition is timed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
SAMPLE_RATE = 16000


@dataclass
class SpeedConfig:
    repeats: int = 3  # timed passes over the whole set; the median is reported
    warmup: int = 1  # clips run once before timing (model caches, allocator, thread pools), not timed
    threads: int = 1  # CPU threads every system computes with

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.warmup < 0 or self.threads < 1:
            raise ValueError(f"warmup must be >= 0 and threads >= 1, got {self.warmup} and {self.threads}")


@dataclass
class Timing:
    repeat_seconds: list[float]  # processing time of all clips, one entry per repeat
    clip_seconds: list[float]  # per clip: median over repeats
    audio_seconds: float

    @property
    def seconds(self) -> float:
        return statistics.median(self.repeat_seconds) if self.repeat_seconds else float("nan")

    @property
    def rtf(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else float("nan")


def timed_runs(
    run: Callable[[np.ndarray], T],
    clips: Sequence[np.ndarray],
    config: SpeedConfig,
    progress: Callable[[float], None] | None = None,
) -> tuple[list[T], Timing]:
    """Outputs of the first timed repeat, and the timing of all repeats.

    `run` is called once per clip per repeat, plus `config.warmup` untimed calls first.
    `progress` gets the seconds of audio finished after each call.
    """
    for clip in clips[: config.warmup]:
        run(clip)
    outputs: list[T] = []
    per_clip = [[0.0] * config.repeats for _ in clips]
    for r in range(config.repeats):
        for i, clip in enumerate(clips):
            t0 = time.perf_counter()
            out = run(clip)
            per_clip[i][r] = time.perf_counter() - t0
            if r == 0:
                outputs.append(out)
            if progress:
                progress(len(clip) / SAMPLE_RATE)
    timing = Timing(
        repeat_seconds=[sum(c[r] for c in per_clip) for r in range(config.repeats)],
        clip_seconds=[statistics.median(c) for c in per_clip],
        audio_seconds=sum(len(c) for c in clips) / SAMPLE_RATE,
    )
    return outputs, timing


def speed_ratio(rtf: float, reference_rtf: float) -> float:
    """rtf / reference_rtf: below 1 means faster than the reference."""
    if not reference_rtf or reference_rtf != reference_rtf:  # zero or NaN
        return float("nan")
    return rtf / reference_rtf


def set_threads(threads: int) -> None:
    """One thread count for every library that computes in this process (torch; CTranslate2 takes
    its own `cpu_threads`; PocketSphinx has only one)."""
    import torch

    torch.set_num_threads(threads)
