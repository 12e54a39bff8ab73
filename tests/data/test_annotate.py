import numpy as np
import pytest
import soxr

from unisono.audio.io import load_audio
from unisono.audio.vad import speech_regions
from unisono.data.annotate import (
    annotate,
    bandwidth_hz,
    clipped_fraction,
    estimate_snr_db,
    estimate_speakers,
    frame_power,
    quality_score,
    speech_frame_mask,
)


@pytest.fixture(scope="module")
def lj(real_speech_dir):
    return load_audio(real_speech_dir / "ljspeech_lj001" / "wav" / "LJ001-0001.wav")


def with_noise(audio, spans, snr_db, seed=0):
    """White noise at `snr_db` below the mean power of the speech frames."""
    p = frame_power(audio)
    speech = p[speech_frame_mask(len(p), spans)].mean()
    noise = np.random.default_rng(seed).standard_normal(len(audio)) * np.sqrt(speech / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


def test_snr_follows_added_noise(lj):
    spans = speech_regions(lj)
    est = {snr: estimate_snr_db(with_noise(lj, spans, snr), spans=spans) for snr in (0, 10, 20)}
    for snr, e in est.items():
        assert abs(e - snr) < 3.0, est
    # the percentile fallback (no VAD spans) orders them too
    blind = [estimate_snr_db(with_noise(lj, spans, snr)) for snr in (0, 10, 20)]
    assert blind[0] < blind[1] < blind[2]


def test_digital_silence_floor_is_the_ceiling():
    tone = np.sin(2 * np.pi * 220 * np.arange(16000) / 16000).astype(np.float32)
    audio = np.concatenate([np.zeros(8000, np.float32), tone, np.zeros(8000, np.float32)])

    class S:
        start, end = 0.5, 1.5

    assert estimate_snr_db(audio, spans=[S()]) == 60.0


def test_clipping_is_measured_as_stuck_samples(lj):
    assert clipped_fraction(lj) == 0.0
    clipped = np.clip(lj * 4, -0.5, 0.5)
    truth = float(np.mean(np.abs(lj * 4) >= 0.5))
    assert clipped_fraction(clipped) == pytest.approx(truth, abs=0.01)
    assert truth > 0.05


def test_bandwidth_of_wide_and_telephone_band(lj):
    assert bandwidth_hz(lj) > 7000
    tel = soxr.resample(soxr.resample(lj, 16000, 8000), 8000, 16000)
    assert 3000 < bandwidth_hz(tel) <= 4000
    rng = np.random.default_rng(0)
    assert bandwidth_hz(rng.standard_normal(32000)) > 7900  # white noise fills the band


def test_quality_orders_defects():
    clean = quality_score(35, 0.0, 7600)
    assert clean == pytest.approx(1.0, abs=0.05)
    assert quality_score(15, 0.0, 7600) < clean
    assert quality_score(35, 0.02, 7600) == 0.0
    assert quality_score(35, 0.0, 3400) == pytest.approx(0.5 + 0.5 * 0.1, abs=0.01)


def test_speaker_count_one_voice_vs_two(real_speech_dir):
    lj = [load_audio(real_speech_dir / "ljspeech_lj001" / "wav" / f"LJ001-000{k}.wav") for k in (1, 3, 4)]
    an4 = sorted((real_speech_dir / "an4_test" / "wav").glob("*fcaw*.wav"))[:4]
    other = [load_audio(p) for p in an4]
    gap = np.zeros(8000, np.float32)
    one = np.concatenate([x for a in lj for x in (a, gap)])
    two = np.concatenate([x for a in lj[:2] + other for x in (a, gap)])
    assert estimate_speakers(one, spans=speech_regions(one)) == 1
    assert estimate_speakers(two, spans=speech_regions(two)) == 2
    assert estimate_speakers(np.zeros(16000, np.float32)) == 0


def test_annotate_puts_it_together(lj):
    a = annotate(lj, spans=speech_regions(lj))
    assert a.speakers == 1 and a.clipped_fraction == 0.0 and a.snr_db > 20 and 0.5 < a.quality <= 1
    assert set(a.scores()) == {"snr_db", "clipped_fraction", "bandwidth_hz", "rms_dbfs"}
