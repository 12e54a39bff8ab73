"""Augmentation: each transform measured against what it claims (SNR, spectrum, band, length)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from unisono.data.augment import (
    AugmentConfig,
    add_noise,
    aligned_augment,
    augment,
    colored_noise,
    is_degraded,
    load_rir_bank,
    make_rir_bank,
    reverberate,
    save_rir_bank,
    speed_perturb,
    telephone,
)

SR = 16000


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Harmonic bursts with silences: enough structure for filters and SNRs to mean something."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 30)) * (np.sin(2 * np.pi * 3 * t) > 0)
    return (0.3 * x / np.abs(x).max() + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 12.5, 30.0])
def test_add_noise_hits_the_snr(snr: float) -> None:
    speech = _speechlike()
    noise = colored_noise("pink", len(speech), np.random.default_rng(1))
    mixed = add_noise(speech, noise, snr)
    residual = mixed.astype(np.float64) - speech
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(residual**2))
    assert measured == pytest.approx(snr, abs=0.01)


@pytest.mark.parametrize("kind, slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_spectral_slope(kind: str, slope: float) -> None:
    x = colored_noise(kind, 5 * SR, np.random.default_rng(2))
    assert np.mean(x**2) == pytest.approx(1.0, rel=1e-3)
    f, p = signal.welch(x, SR, nperseg=4096)
    band = (f > 50) & (f < 6000)
    fitted = np.polyfit(np.log10(f[band]), np.log10(p[band]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.15)


def test_hum_is_at_mains_frequency() -> None:
    x = colored_noise("hum", 2 * SR, np.random.default_rng(3))
    f, p = signal.welch(x, SR, nperseg=8192)
    assert f[np.argmax(p)] == pytest.approx(50, abs=2) or f[np.argmax(p)] == pytest.approx(60, abs=2)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_changes_length_and_pitch(factor: float) -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32)
    out = speed_perturb(tone, factor)
    assert len(out) == pytest.approx(SR / factor, abs=2)
    f, p = signal.welch(out, SR, nperseg=8192)
    assert f[np.argmax(p)] == pytest.approx(440 * factor, abs=3)


def test_telephone_band_limits() -> None:
    x = colored_noise("white", 3 * SR, np.random.default_rng(4))
    out = telephone(0.1 * x)
    assert len(out) == len(x)
    f, p = signal.welch(out, SR, nperseg=2048)
    inside = p[(f > 500) & (f < 3000)].mean()
    assert p[f > 4500].mean() < inside * 1e-3  # nothing above the 8 kHz Nyquist of the line
    assert p[(f > 10) & (f < 120)].mean() < inside * 0.05


def test_rir_bank_and_reverb(tmp_path) -> None:
    rirs, infos = make_rir_bank(3, seed=5)
    assert len(rirs) == len(infos) == 3
    assert all(0.15 <= i["rt60_s"] <= 0.9 and np.abs(r).max() == pytest.approx(1.0) for r, i in zip(rirs, infos))
    path = save_rir_bank(tmp_path / "rirs.npz", rirs, infos)
    loaded, loaded_infos = load_rir_bank(path)
    assert loaded_infos == infos and all(np.array_equal(a, b) for a, b in zip(rirs, loaded))
    speech = _speechlike()
    wet = reverberate(speech, rirs[0])
    assert len(wet) == len(speech)
    assert np.mean(wet**2) == pytest.approx(np.mean(speech.astype(np.float64) ** 2), rel=1e-3)
    # Reverberation fills the silent gaps between bursts with decaying energy.
    gap = slice(int(0.18 * SR), int(0.25 * SR))  # bursts: 0-1/6 s on, 1/6-1/3 s off
    assert np.mean(wet[gap] ** 2) > 10 * np.mean(speech[gap].astype(np.float64) ** 2)


def test_augment_chain_is_recorded_and_reproducible() -> None:
    speech = _speechlike()
    bank = make_rir_bank(2, seed=0)
    cfg = AugmentConfig(p_clean=0.0, p_speed=1.0, p_reverb=1.0, p_noise=1.0, p_telephone=1.0, p_gain=1.0)
    a = augment(speech, np.random.default_rng(7), cfg, bank)
    b = augment(speech, np.random.default_rng(7), cfg, bank)
    assert np.array_equal(a.audio, b.audio) and a.steps == b.steps
    kinds = [s["kind"] for s in a.steps]
    assert kinds[:5] == ["speed", "reverb", "noise", "telephone", "gain"]
    assert a.snr_db == a.steps[2]["snr_db"]
    assert len(a.audio) == pytest.approx(len(speech) / a.steps[0]["factor"], abs=2)
    assert np.abs(a.audio).max() <= 0.99 + 1e-6


def test_clean_share_leaves_audio_untouched() -> None:
    speech = _speechlike()
    out = augment(speech, np.random.default_rng(0), AugmentConfig(p_clean=1.0))
    assert out.steps == [] and np.array_equal(out.audio, speech) and out.audio is not speech


def test_loud_gain_is_limited_not_clipped() -> None:
    speech = _speechlike()
    cfg = AugmentConfig(p_clean=0.0, p_speed=0, p_reverb=0, p_noise=0, p_telephone=0, p_gain=1.0, gain_db=(20.0, 20.0))
    out = augment(speech, np.random.default_rng(0), cfg)
    assert [s["kind"] for s in out.steps] == ["gain", "limit"]
    assert np.abs(out.audio).max() == pytest.approx(0.99, abs=1e-4)
    np.testing.assert_allclose(out.audio / np.abs(out.audio).max(), speech / np.abs(speech).max(), atol=1e-5)


def test_aligned_augment_keeps_every_sample_in_place() -> None:
    """The degraded copy has the clip's length and is the chain `augment` draws with no speed change and no clean
    pass, so labels of the clean clip still describe it; the degrading steps are told apart from speed and gain."""
    speech = (0.1 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    cfg, bank = AugmentConfig(), make_rir_bank(4, seed=0)
    for seed in range(6):
        out = aligned_augment(speech, np.random.default_rng(seed), cfg, bank)
        same = augment(speech, np.random.default_rng(seed), AugmentConfig(p_clean=0.0, p_speed=0.0), bank)
        assert len(out.audio) == len(speech)
        assert not any(step["kind"] == "speed" for step in out.steps)
        np.testing.assert_array_equal(out.audio, same.audio)
    assert not is_degraded([{"kind": "speed", "factor": 0.9}, {"kind": "gain", "db": -3.0}])
    assert is_degraded([{"kind": "gain", "db": -3.0}, {"kind": "noise", "noise": "pink", "snr_db": 6.0}])
