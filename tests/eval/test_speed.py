"""Timing protocol: warm-up excluded, every clip in every repeat, medians, ratios (on a fake clock)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unisono.eval import speed
from unisono.eval.speed import SpeedConfig, Timing, speed_ratio, timed_runs


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_warmup_excluded_medians_and_rtf(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(speed.time, "perf_counter", clock)
    clips = [np.zeros(16000, np.float32), np.zeros(32000, np.float32)]  # 1 s and 2 s
    # seconds each call takes, in call order: 1 warm-up call, then 3 repeats x 2 clips
    costs = iter([100.0, 0.5, 1.0, 0.7, 1.2, 0.3, 0.8])
    calls = []

    def run(clip):
        calls.append(len(clip))
        clock.now += next(costs)
        return len(calls)

    outputs, t = timed_runs(run, clips, SpeedConfig(repeats=3, warmup=1))
    assert calls == [16000, 16000, 32000, 16000, 32000, 16000, 32000]
    assert outputs == [2, 3]  # the first timed repeat's outputs; the warm-up's are dropped
    assert t.repeat_seconds == pytest.approx([1.5, 1.9, 1.1])  # the 100 s warm-up is nowhere
    assert t.clip_seconds == pytest.approx([0.5, 1.0])  # medians of (0.5, 0.7, 0.3) and (1.0, 1.2, 0.8)
    assert t.seconds == pytest.approx(1.5) and t.audio_seconds == pytest.approx(3.0)
    assert t.rtf == pytest.approx(0.5)


def test_progress_reports_audio_seconds(monkeypatch):
    seen = []
    timed_runs(lambda c: None, [np.zeros(8000, np.float32)] * 3, SpeedConfig(repeats=2, warmup=0), progress=seen.append)
    assert seen == [0.5] * 6


def test_ratio():
    assert speed_ratio(0.1, 0.2) == pytest.approx(0.5)
    assert math.isnan(speed_ratio(0.1, 0.0)) and math.isnan(speed_ratio(0.1, float("nan")))
    assert math.isnan(Timing([], [], 0.0).rtf)


@pytest.mark.parametrize("kwargs", [dict(repeats=0), dict(warmup=-1), dict(threads=0)])
def test_bad_config(kwargs):
    with pytest.raises(ValueError):
        SpeedConfig(**kwargs)
