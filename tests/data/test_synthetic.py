import shutil
import subprocess

import numpy as np
import pytest

from unisono.audio.io import load_audio
from unisono.data.synthetic import FEATURE_NAMES, SyntheticVoiceDetector, features, fit_logistic, pitch_track


def test_pitch_track_finds_a_known_f0():
    t = np.arange(16000) / 16000
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6)).astype(np.float32) * 0.3
    f0 = pitch_track(tone)
    assert np.median(f0[f0 > 0]) == pytest.approx(150, rel=0.02)
    assert (f0 > 0).mean() > 0.9
    assert not pitch_track(np.zeros(16000, np.float32)).any()


def test_features_are_finite_on_odd_input():
    for audio in (np.zeros(100, np.float32), np.zeros(16000, np.float32), np.random.default_rng(0).standard_normal(8000)):
        x = features(audio)
        assert x.shape == (len(FEATURE_NAMES),) and np.isfinite(x).all()


def test_logistic_fit_separates_separable_data():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (100, 3)), rng.normal(0, 1, (100, 3)) + [4, 0, 0]])
    y = np.r_[np.zeros(100), np.ones(100)]
    det = fit_logistic(x, y, l2=0.1)
    assert ((det.score_features(x) >= 0.5) == y).mean() > 0.97
    assert abs(det.weights[0]) > 5 * max(abs(det.weights[1]), abs(det.weights[2]))  # only feature 0 matters


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_bundled_detector_tells_espeak_from_a_person(tmp_path, real_speech_dir):
    det = SyntheticVoiceDetector.bundled()
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), "The quick brown fox jumps over the lazy dog near the river bank."],
                   check=True, capture_output=True)
    assert det.score(load_audio(wav)) >= 0.5
    real = load_audio(real_speech_dir / "ljspeech_lj001" / "wav" / "LJ001-0003.wav")
    assert det.score(real) < 0.5
    assert det.info["held_out_accuracy"] > 0.85


def test_weights_round_trip(tmp_path):
    det = SyntheticVoiceDetector.bundled()
    again = SyntheticVoiceDetector.load(det.save(tmp_path / "w.json"))
    x = np.random.default_rng(0).normal(size=(4, len(FEATURE_NAMES)))
    np.testing.assert_allclose(again.score_features(x), det.score_features(x))
