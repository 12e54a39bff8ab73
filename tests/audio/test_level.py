"""Input level: digital silence, quiet recordings raised to a level silero-vad and the model hear."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from unisono.audio.level import LevelConfig, adjust_level, peak_dbfs


@pytest.fixture(scope="module")
def speech(example_wav):
    audio, _ = sf.read(example_wav, dtype="float32")
    return audio / np.abs(audio).max() * 10 ** (-6 / 20)  # peak -6 dBFS


def test_peak_dbfs():
    assert peak_dbfs(np.array([0.5, -1.0], np.float32)) == pytest.approx(0.0)
    assert peak_dbfs(np.array([0.0, 0.001], np.float32)) == pytest.approx(-60.0)
    assert peak_dbfs(np.zeros(10, np.float32)) == -np.inf


def test_normal_speech_is_left_alone(speech):
    out = adjust_level(speech)
    assert out.audio is speech and out.gain_db == 0.0 and out.warning is None and not out.silent


@pytest.mark.parametrize("level", [-45.0, -60.0, -75.0])
def test_quiet_speech_is_raised_to_the_target_peak_with_a_warning(speech, level):
    quiet = (speech * 10 ** ((level + 6) / 20)).astype(np.float32)
    out = adjust_level(quiet)
    assert peak_dbfs(out.audio) == pytest.approx(LevelConfig().target_peak_dbfs, abs=0.01)
    assert out.gain_db == pytest.approx(LevelConfig().target_peak_dbfs - level, abs=0.01)
    assert "quiet" in out.warning and f"{level:.0f} dBFS" in out.warning
    np.testing.assert_allclose(out.audio / np.abs(out.audio).max(), speech / np.abs(speech).max(), atol=1e-6)  # same shape


def test_digital_silence_is_flagged_not_amplified():
    out = adjust_level(np.full(16000, 1e-6, np.float32))  # -120 dBFS: below 16-bit dither
    assert out.silent and out.gain_db == 0.0 and "silent" in out.warning
