"""Offline synthesisers: every engine speaks, rate changes duration, failures are typed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from unisono.data.engines import (
    SynthesisError,
    Voice,
    available_voices,
    festival_session,
    festival_voices,
    render,
    sample_params,
)

needs_espeak = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed")


@needs_espeak
def test_voice_catalogue() -> None:
    voices = available_voices()
    ids = [v.id for v in voices]
    assert len(ids) == len(set(ids))
    zh = [v for v in voices if v.language == "zh"]
    assert zh and all(v.engine == "espeak-ng" and v.name.startswith("cmn-latn-pinyin+") for v in zh)
    en_espeak = {v.name.split("+")[0] for v in voices if v.engine == "espeak-ng" and v.language == "en"}
    assert {"en-us", "en-gb"} <= en_espeak
    if shutil.which("flite"):
        assert {"kal", "slt"} <= {v.name for v in voices if v.engine == "flite"}
        assert "awb_time" not in {v.name for v in voices}  # speaks clock times only
    assert available_voices(("zh",)) == zh


def _one_voice_per_engine() -> list[Voice]:
    if not shutil.which("espeak-ng"):
        return []
    voices = available_voices()
    picks = {}
    for v in voices:
        key = (v.engine, v.language, v.name.endswith("_hts"))
        picks.setdefault(key, v)
    return list(picks.values())


@pytest.mark.parametrize("voice", _one_voice_per_engine(), ids=lambda v: v.id)
def test_every_engine_speaks(voice: Voice) -> None:
    """Twice: festival runs as a session kept between utterances, which must not carry state."""
    text = "The quick brown fox jumps over the lazy dog." if voice.language == "en" else "今天的天气非常好。"
    params = sample_params(voice, np.random.default_rng(0))
    audio = render(voice, text, params)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.0 < len(audio) / 16000 < 8.0
    assert np.sqrt(np.mean(audio**2)) > 0.01
    assert np.array_equal(render(voice, text, params), audio)


def test_festival_session_survives_a_crash() -> None:
    if "kal_diphone" not in festival_voices():
        pytest.skip("festival's kal_diphone voice is not installed")
    voice = Voice("festival", "kal_diphone", "en")
    params = {"rate": 1.0, "duration_stretch": 1.0, "f0_mean_hz": 105}
    first = render(voice, "Before the crash.", params)
    session = festival_session()
    session.proc.kill()
    session.proc.wait()
    assert len(render(voice, "After the crash.", params)) > 0.5 * 16000
    assert np.array_equal(render(voice, "Before the crash.", params), first)


@needs_espeak
def test_rate_changes_duration() -> None:
    voice = Voice("espeak-ng", "en-us+m3", "en")
    text = "Printing, in the only sense with which we are at present concerned, differs from most arts."
    slow = render(voice, text, {"rate": 0.8, "wpm": 140, "pitch": 50})
    fast = render(voice, text, {"rate": 1.25, "wpm": 219, "pitch": 50})
    assert len(slow) / len(fast) == pytest.approx(219 / 140, rel=0.15)


@needs_espeak
def test_params_stay_in_range() -> None:
    rng = np.random.default_rng(0)
    for voice in available_voices()[::50]:
        p = sample_params(voice, rng)
        assert 0.8 <= p["rate"] <= 1.25
        if voice.engine == "espeak-ng":
            assert 25 <= p["pitch"] <= 75


@needs_espeak
@pytest.mark.parametrize("voice", [Voice("espeak-ng", "no-such-voice", "en"), Voice("espeak-ng", "en-us+nope", "en"),
                                   Voice("flite", "nope", "en"), Voice("festival", "nope_diphone", "en")])
def test_unknown_voices_are_refused_not_replaced(voice: Voice) -> None:
    # The engines themselves fall back to a default voice: the clip would be mislabelled.
    with pytest.raises(SynthesisError, match="has no voice"):
        render(voice, "Hello there.", {"rate": 1.0, "wpm": 175, "pitch": 50, "duration_stretch": 1.0, "f0_mean_hz": 100})


def test_failures_are_typed() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        render(Voice("sapi", "x", "en"), "Hello there.", {})
