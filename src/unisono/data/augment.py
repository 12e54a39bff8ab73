"""Augmentation of clean synthetic speech towards the conditions of real recordings.

Each transform is a pure function of (audio, rng) that returns new audio plus a record of what
it did; `augment()` chains them with the probabilities of an `AugmentConfig`, in the order a
signal meets them in the world:

    speed perturbation -> room reverberation -> additive noise -> telephone channel -> gain

Speed perturbation resamples (tempo and pitch change together, as in Kaldi's 0.9/1.1 recipe).
Room impulse responses come from pyroomacoustics' image-source model of random shoebox rooms,
drawn once into a bank (`make_rir_bank`) because simulating a room costs far more than
convolving with it. Noise is white, pink, brown (1/f^a spectra) or mains hum, mixed at a random
SNR measured against the speech's own power. The telephone channel is a 300-3400 Hz band-pass
at 8 kHz with mu-law companding.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soxr
from scipy import signal

SAMPLE_RATE = 16000
# the transforms that take something from the speech; speed and gain change how it is said, not what is heard
DEGRADING_KINDS = frozenset({"noise", "reverb", "telephone", "limit"})


@dataclass
class AugmentConfig:
    # Share of clips left clean: the model must also hear speech as the synthesiser made it.
    p_clean: float = 0.2
    p_speed: float = 0.3
    speeds: tuple[float, ...] = (0.9, 1.1)
    p_reverb: float = 0.35
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (0.0, 30.0)
    noise_kinds: tuple[str, ...] = ("white", "pink", "brown", "hum")
    p_telephone: float = 0.15
    p_gain: float = 0.6
    gain_db: tuple[float, float] = (-20.0, 6.0)
    rir_bank_size: int = 48


# --- individual transforms -------------------------------------------------------------------

def speed_perturb(audio: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Play `factor` times faster (shorter, higher): resample as if recorded at sr*factor."""
    return soxr.resample(audio, sr * factor, sr).astype(np.float32)


def colored_noise(kind: str, n: int, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-power noise: white (flat), pink (1/f), brown (1/f^2) or 50/60 Hz mains hum."""
    if kind == "hum":
        t = np.arange(n) / sr
        f0 = rng.choice([50.0, 60.0])
        # The fundamental and odd harmonics, decaying: the buzz of a ground loop.
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 3, 5, 7))
        x = x + 0.05 * rng.standard_normal(n)
    else:
        from scipy import fft

        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
        size = fft.next_fast_len(max(n, 2), real=True)  # a prime length would make the FFT crawl
        spectrum = fft.rfft(rng.standard_normal(size))
        freqs = fft.rfftfreq(size, 1 / sr)
        freqs[0] = freqs[1]
        x = fft.irfft(spectrum / freqs ** (exponent / 2), size)[:n]
    x = x - x.mean()
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Mix `noise` into `audio` so that power(audio) / power(noise) = snr_db."""
    p_speech = np.mean(audio.astype(np.float64) ** 2)
    p_noise = np.mean(noise.astype(np.float64) ** 2) + 1e-20
    scale = np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return (audio + scale * noise[: len(audio)]).astype(np.float32)


def make_rir_bank(n: int, seed: int = 0, sr: int = SAMPLE_RATE) -> tuple[list[np.ndarray], list[dict]]:
    """`n` room impulse responses of random shoebox rooms (image-source method)."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs, infos = [], []
    while len(rirs) < n:
        dims = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 4.0])
        rt60 = float(rng.uniform(0.15, 0.9))
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # the room cannot reach this RT60 (too small and too live)
            continue
        room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption), max_order=min(max_order, 30))
        margin = 0.5
        source = rng.uniform([margin] * 3, dims - margin)
        mic = rng.uniform([margin] * 3, dims - margin)
        room.add_source(source)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float32)
        rirs.append(rir / (np.abs(rir).max() + 1e-12))
        infos.append({"room_m": [round(float(d), 2) for d in dims], "rt60_s": round(rt60, 3),
                      "distance_m": round(float(np.linalg.norm(source - mic)), 2)})
    return rirs, infos


def save_rir_bank(path: Path, rirs: list[np.ndarray], infos: list[dict]) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, *rirs, infos=np.array(json.dumps(infos)))
    tmp.replace(path)
    return path


def load_rir_bank(path: Path) -> tuple[list[np.ndarray], list[dict]]:
    import json

    with np.load(path) as z:
        infos = json.loads(str(z["infos"]))
        rirs = [z[f"arr_{i}"] for i in range(len(infos))]
    return rirs, infos


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with `rir`, aligned on its direct path, same length and power as the input."""
    onset = int(np.argmax(np.abs(rir)))
    wet = signal.fftconvolve(audio, rir[onset:])[: len(audio)]
    gain = np.sqrt(np.mean(audio.astype(np.float64) ** 2) / (np.mean(wet**2) + 1e-20))
    return (wet * gain).astype(np.float32)


def telephone(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A narrow-band phone line: 8 kHz, 300-3400 Hz, 8-bit mu-law, back to `sr`."""
    narrow = soxr.resample(audio, sr, 8000)
    sos = signal.butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos")
    narrow = signal.sosfilt(sos, narrow)
    peak = np.abs(narrow).max() + 1e-12
    x = np.clip(narrow / peak, -1, 1)
    mu = 255.0
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    quantised = np.round(companded * 127) / 127
    expanded = np.sign(quantised) * ((1 + mu) ** np.abs(quantised) - 1) / mu
    return soxr.resample(expanded * peak, 8000, sr).astype(np.float32)


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    return (audio * 10 ** (gain_db / 20)).astype(np.float32)


# --- the chain -------------------------------------------------------------------------------

@dataclass
class Augmented:
    audio: np.ndarray
    steps: list[dict] = field(default_factory=list)  # one record per transform, in order
    snr_db: float | None = None


def augment(audio: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
            rirs: tuple[list[np.ndarray], list[dict]] | None = None, sr: int = SAMPLE_RATE) -> Augmented:
    """Apply a random chain of transforms; the result records each step and its parameters."""
    out = Augmented(audio.astype(np.float32, copy=True))
    if rng.random() < cfg.p_clean:
        return out
    if rng.random() < cfg.p_speed:
        factor = float(rng.choice(cfg.speeds))
        out.audio = speed_perturb(out.audio, factor, sr)
        out.steps.append({"kind": "speed", "factor": factor})
    if rirs and rirs[0] and rng.random() < cfg.p_reverb:
        i = int(rng.integers(len(rirs[0])))
        out.audio = reverberate(out.audio, rirs[0][i])
        out.steps.append({"kind": "reverb", "rir": i, **rirs[1][i]})
    if rng.random() < cfg.p_noise:
        kind = str(rng.choice(cfg.noise_kinds))
        snr = round(float(rng.uniform(*cfg.snr_db)), 2)
        out.audio = add_noise(out.audio, colored_noise(kind, len(out.audio), rng, sr), snr)
        out.steps.append({"kind": "noise", "noise": kind, "snr_db": snr})
        out.snr_db = snr
    if rng.random() < cfg.p_telephone:
        out.audio = telephone(out.audio, sr)
        out.steps.append({"kind": "telephone", "band_hz": [300, 3400], "codec": "mu-law"})
    if rng.random() < cfg.p_gain:
        gain = round(float(rng.uniform(*cfg.gain_db)), 2)
        out.audio = apply_gain(out.audio, gain)
        out.steps.append({"kind": "gain", "db": gain})
    peak = float(np.abs(out.audio).max()) if len(out.audio) else 0.0
    if peak > 0.99:
        # Loud mixes are limited, not clipped: a clipped clip teaches distortion, not speech.
        out.audio = (out.audio * (0.99 / peak)).astype(np.float32)
        out.steps.append({"kind": "limit", "db": round(20 * np.log10(0.99 / peak), 2)})
    return out


def aligned_augment(audio: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
                    rirs: tuple[list[np.ndarray], list[dict]] | None = None, sr: int = SAMPLE_RATE) -> Augmented:
    """`augment` without the speed change and without the chance of staying clean: every other transform keeps the
    length, so the result is sample for sample aligned with `audio`, and labels of the clean clip (its tokens, its
    frames) still describe it. The chain may still draw no transform at all."""
    return augment(audio, rng, replace(cfg, p_clean=0.0, p_speed=0.0), rirs, sr)


def is_degraded(steps: list[dict]) -> bool:
    """Whether a recorded chain (`Augmented.steps`, a manifest's `meta.augment`) took something from the speech."""
    return any(step.get("kind") in DEGRADING_KINDS for step in steps)
