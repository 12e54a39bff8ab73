"""Synthetic-voice detection: is this clip a speech synthesiser or a person?

A logistic regression over 43 signal statistics that separate rule-based and statistical
synthesisers (formant, diphone, HMM) from human speech:

    pitch      voiced share, spread of log F0, frame-to-frame F0 jitter (people wobble;
               synthesisers glide), voicing-decision changes per second
    spectrum   MFCC 1..12 mean and std, delta-MFCC 1..12 std (joins and smooth trajectories),
               spectral flatness mean and std

The weights ship in `assets/synthetic_voice.json`; `fit` refits them. They were fitted on the
synthetic corpus (espeak-ng, flite, festival; clean and augmented) against the real training
speech (AN4 train, speechocean762 train), the real clips put through the same augmentation,
so that noise or a telephone band is not mistaken for synthesis. The score is the model's
probability of "synthetic"; the pipeline flags clips at >= 0.5.

The detector knows the synthesisers it was fitted on; a neural TTS voice it has never heard
may well pass as human. Treat the flag as a filter for the engines above, not as a forensic test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SAMPLE_RATE = 16000
WEIGHTS_FILE = Path(__file__).resolve().parents[1] / "assets" / "synthetic_voice.json"
FEATURE_NAMES = (
    ["voiced_share", "logf0_std", "f0_jitter", "voicing_changes_per_s"]
    + [f"mfcc{i}_mean" for i in range(1, 13)]
    + [f"mfcc{i}_std" for i in range(1, 13)]
    + [f"dmfcc{i}_std" for i in range(1, 13)]
    + ["flatness_mean", "flatness_std"]
    + ["duration_log"]
)


def pitch_track(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, fmin: float = 60.0, fmax: float = 400.0,
                voicing: float = 0.45) -> np.ndarray:
    """F0 per 10 ms frame (Hz; 0 where unvoiced) by normalised autocorrelation of 40 ms frames."""
    frame, hop = int(0.04 * sample_rate), int(0.01 * sample_rate)
    if len(audio) < frame:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64), frame)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(frames, n=2 * frame, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :frame]  # (frames, lags)
    energy = ac[:, :1]
    ac = ac / np.maximum(energy, 1e-12)
    lo, hi = int(sample_rate / fmax), int(sample_rate / fmin)
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    peak = ac[np.arange(len(ac)), lag]
    loud = energy[:, 0] / frame > 1e-6  # below -60 dBFS: silence, not unvoiced speech
    return np.where((peak >= voicing) & loud, sample_rate / lag, 0.0)


def features(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The detector's input: (len(FEATURE_NAMES),) statistics of one clip."""
    from unisono.data.annotate import mfcc

    audio = np.asarray(audio, dtype=np.float32)
    f0 = pitch_track(audio, sample_rate)
    voiced = f0 > 0
    logf0 = np.log(f0[voiced]) if voiced.any() else np.zeros(1)
    # jitter: |d log F0| between neighbouring voiced frames, robust to octave jumps (clipped)
    both = voiced[1:] & voiced[:-1]
    d = np.abs(np.diff(np.log(np.where(voiced, f0, 1.0))))[both] if len(f0) > 1 else np.zeros(0)
    jitter = float(np.median(np.minimum(d, 0.3))) if len(d) else 0.0
    seconds = max(len(audio) / sample_rate, 1e-3)
    pitch = [voiced.mean() if len(voiced) else 0.0, float(logf0.std()), jitter,
             float(np.abs(np.diff(voiced.astype(int))).sum() / seconds) if len(voiced) > 1 else 0.0]

    c = mfcc(audio, sample_rate)
    power = np.mean(c[:, :1], axis=1) if len(c) else np.zeros(0)
    keep = power > (np.percentile(power, 30) if len(power) else 0)  # drop the quietest frames
    c = c[keep] if keep.sum() >= 3 else c
    cc = c[:, 1:13]
    delta = np.diff(cc, axis=0) if len(cc) > 1 else np.zeros((1, 12))

    frames = np.lib.stride_tricks.sliding_window_view(np.pad(audio, (0, max(0, 400 - len(audio)))), 400)[::160]
    spec = np.abs(np.fft.rfft(frames * np.hanning(400), axis=1)) ** 2 + 1e-12
    flat = np.exp(np.mean(np.log(spec), axis=1)) / np.mean(spec, axis=1)
    return np.concatenate([
        pitch, cc.mean(0), cc.std(0), delta.std(0), [float(flat.mean()), float(flat.std())], [np.log(seconds)],
    ]).astype(np.float64)


@dataclass
class SyntheticVoiceDetector:
    mean: np.ndarray  # (F,) feature standardisation
    scale: np.ndarray  # (F,)
    weights: np.ndarray  # (F,)
    bias: float
    info: dict | None = None  # how the weights were fitted, and their held-out accuracy

    def score_features(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - self.mean) / self.scale
        return 1 / (1 + np.exp(-(z @ self.weights + self.bias)))

    def score(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
        """Probability that the clip is synthetic speech."""
        return float(self.score_features(features(audio, sample_rate))[0])

    def save(self, path: str | Path = WEIGHTS_FILE) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "features": FEATURE_NAMES, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "weights": self.weights.tolist(), "bias": self.bias, "info": self.info or {},
        }, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SyntheticVoiceDetector:
        d = json.loads(Path(path).read_text())
        if list(d["features"]) != FEATURE_NAMES:
            raise ValueError(f"{path}: fitted on other features than this version computes; refit with "
                             "unisono.data.synthetic.fit")
        return cls(np.array(d["mean"]), np.array(d["scale"]), np.array(d["weights"]), float(d["bias"]), d.get("info"))

    @classmethod
    def bundled(cls) -> SyntheticVoiceDetector:
        return cls.load(WEIGHTS_FILE)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> SyntheticVoiceDetector:
    """L2-regularised logistic regression (L-BFGS) on standardised features."""
    from scipy.optimize import minimize

    mean, scale = x.mean(0), x.std(0) + 1e-9
    z = (x - mean) / scale
    n, f = z.shape

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:f], theta[f]
        logits = z @ w + b
        p = 1 / (1 + np.exp(-logits))
        # log(1 + e^x) computed stably
        nll = np.sum(np.logaddexp(0, logits) - y * logits) / n + 0.5 * l2 * (w @ w) / n
        g = p - y
        return nll, np.concatenate([z.T @ g / n + l2 * w / n, [g.mean()]])

    res = minimize(loss, np.zeros(f + 1), jac=True, method="L-BFGS-B")
    return SyntheticVoiceDetector(mean, scale, res.x[:f], float(res.x[f]))


def fit(synthetic: Sequence[np.ndarray], real: Sequence[np.ndarray], *, held_out: float = 0.2, seed: int = 0,
        l2: float = 1.0, info: dict | None = None) -> SyntheticVoiceDetector:
    """Fit on clips (16 kHz); a `held_out` share of each class measures accuracy, then all of it refits."""
    x = np.stack([features(a) for a in list(synthetic) + list(real)])
    y = np.concatenate([np.ones(len(synthetic)), np.zeros(len(real))])
    rng = np.random.default_rng(seed)
    test = rng.random(len(y)) < held_out
    probe = fit_logistic(x[~test], y[~test], l2)
    pred = probe.score_features(x[test]) >= 0.5
    accuracy = float((pred == y[test]).mean()) if test.any() else float("nan")
    det = fit_logistic(x, y, l2)
    det.info = {**(info or {}), "clips": {"synthetic": len(synthetic), "real": len(real)},
                "held_out_accuracy": round(accuracy, 4), "held_out_clips": int(test.sum())}
    return det


def fit_from_manifests(synthetic_dirs: Sequence[str | Path], real_dirs: Sequence[str | Path], *, per_class: int = 600,
                       augment_real: float = 0.5, seed: int = 0, max_clip_s: float = 12.0) -> SyntheticVoiceDetector:
    """Fit on up to `per_class` clips of each kind drawn from manifests (folders holding one).

    A share `augment_real` of the real clips goes through the corpus builder's augmentation
    chain (noise, reverberation, telephone band, gain, speed), as the synthetic corpus does,
    so the detector cannot tell the classes apart by their channel.
    """
    from unisono.audio.io import load_audio
    from unisono.data.augment import AugmentConfig, augment, make_rir_bank
    from unisono.data.manifest import read_manifest

    rng = np.random.default_rng(seed)

    def draw(dirs: Sequence[str | Path]) -> list[tuple[Path, object]]:
        pool = [(Path(d), u) for d in dirs for u in read_manifest(d) if u.duration <= max_clip_s]
        idx = rng.permutation(len(pool))[:per_class]
        return [pool[i] for i in idx]

    synth = [load_audio(d / u.audio) for d, u in draw(synthetic_dirs)]
    rirs = make_rir_bank(16, seed=seed)
    cfg = AugmentConfig()
    real = []
    for d, u in draw(real_dirs):
        a = load_audio(d / u.audio)
        if rng.random() < augment_real:
            a = augment(a, rng, cfg, rirs).audio
        real.append(a)
    info = {"synthetic": [str(d) for d in synthetic_dirs], "real": [str(d) for d in real_dirs],
            "augment_real": augment_real, "seed": seed}
    return fit(synth, real, seed=seed, info=info)


__all__ = ["FEATURE_NAMES", "SyntheticVoiceDetector", "features", "fit", "fit_from_manifests", "fit_logistic", "pitch_track"]
