"""What a spoken clip measures: the scores `unisono eval tts` reports and TTS rewards are made of.

    delivery      speech duration (silence trimmed), speaking rate (words a second in English,
                  characters a second in Mandarin) and median F0, measured on the audio
    adherence     whether an instruction was followed: the instructed clip's rate or F0 against
                  the same system's clip of the same text spoken without the instruction
    similarity    cosine of GE2E speaker embeddings (resemblyzer), an encoder trained on neither side
    dnsmos        Microsoft's DNSMOS P.835 (overall, signal, background) and P.808, via `speechmos`

Intelligibility (WER/CER against the text) is the recogniser's (`unisono.peers.recognizers`)
scored by `unisono.eval.metrics`, as for ASR.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from unisono.audio.level import trim_silence

SAMPLE_RATE = 16000
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
# What counts as an instruction followed: a rate changed by 5 % in the asked direction, a pitch
# moved by one semitone. Both are well above what two renderings of one text differ by alone.
RATE_STEP = 0.05
PITCH_STEP_ST = 1.0
ASKED = {"rate": ("slow", "fast"), "pitch": ("low", "high")}


def speech_units(text: str, language: str) -> int:
    """Words in English, Han characters in Mandarin: what a speaking rate counts."""
    return len(_HAN.findall(text)) if language == "zh" else len(_WORD.findall(text))


@dataclass
class Delivery:
    speech_s: float  # seconds between the first and last loud frame
    rate: float  # speech units a second
    f0_median_hz: float | None  # None where nothing is voiced

    def to_dict(self) -> dict:
        return {"speech_s": round(self.speech_s, 3), "rate": round(self.rate, 3),
                "f0_median_hz": None if self.f0_median_hz is None else round(self.f0_median_hz, 1)}


def measure_delivery(audio: np.ndarray, text: str, language: str) -> Delivery:
    from unisono.data.synthetic import pitch_track

    speech = trim_silence(np.asarray(audio, np.float32))
    seconds = len(speech) / SAMPLE_RATE
    f0 = pitch_track(speech, SAMPLE_RATE)
    voiced = f0[f0 > 0]
    return Delivery(seconds, speech_units(text, language) / seconds if seconds > 0 else 0.0,
                    float(np.median(voiced)) if len(voiced) else None)


def check_asked(asked: dict) -> dict:
    """The controls an instruction asks for, checked: {"rate": "slow"|"fast", "pitch": "low"|"high"}."""
    for key, value in asked.items():
        if key not in ASKED or value not in ASKED[key]:
            raise ValueError(f"asked {key}={value!r}: a prompt may ask rate slow|fast and pitch low|high")
    return dict(asked)


def adherence(asked: dict, instructed: Delivery, neutral: Delivery) -> dict[str, dict]:
    """Per asked control: the measured change (rate ratio, F0 shift in semitones) and whether it
    went the asked way by at least RATE_STEP / PITCH_STEP_ST. A control that cannot be measured
    (no speech, nothing voiced) is not followed."""
    out = {}
    for key, value in check_asked(asked).items():
        if key == "rate":
            change = instructed.rate / neutral.rate if neutral.rate > 0 and instructed.rate > 0 else float("nan")
            ok = change <= 1 - RATE_STEP if value == "slow" else change >= 1 + RATE_STEP
        else:
            a, b = instructed.f0_median_hz, neutral.f0_median_hz
            change = 12 * math.log2(a / b) if a and b else float("nan")
            ok = change <= -PITCH_STEP_ST if value == "low" else change >= PITCH_STEP_ST
        out[key] = {"asked": value, "change": None if math.isnan(change) else round(change, 3),
                    "followed": bool(ok and not math.isnan(change))}
    return out


class SpeakerSimilarity:
    """Cosine of resemblyzer (GE2E) embeddings: an independent speaker encoder."""

    def __init__(self) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder, preprocess_wav

        self._pre = preprocess_wav
        self.encoder = VoiceEncoder(device="cpu", verbose=False)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        wav = self._pre(np.asarray(audio, dtype=np.float32))
        if len(wav) < 1600:  # all silence trimmed away: embed the raw clip instead
            wav = np.asarray(audio, dtype=np.float32)
        return self.encoder.embed_utterance(wav)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        ea, eb = self.embed(a), self.embed(b)
        return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb) + 1e-9))


DNSMOS_INSTALL = "pip install speechmos==0.0.1.1 (or pip install -e '.[eval]')"


def dnsmos(audio: np.ndarray) -> dict[str, float]:
    """DNSMOS of a 16 kHz clip: {"ovrl", "sig", "bak", "p808"} on the 1-5 MOS scale."""
    import importlib.util

    if importlib.util.find_spec("speechmos") is None:
        raise RuntimeError(f"DNSMOS needs the speechmos package: {DNSMOS_INSTALL}")
    from speechmos import dnsmos as model

    audio = np.asarray(audio, np.float32)
    if len(audio) < SAMPLE_RATE // 2:  # the model reads at least half a second; pad a shorter clip
        audio = np.pad(audio, (0, SAMPLE_RATE // 2 - len(audio)))
    peak = float(np.abs(audio).max())
    if peak > 1.0:  # speechmos refuses samples outside [-1, 1]
        audio = audio / peak
    scores = model.run(audio, SAMPLE_RATE)
    return {"ovrl": float(scores["ovrl_mos"]), "sig": float(scores["sig_mos"]), "bak": float(scores["bak_mos"]),
            "p808": float(scores["p808_mos"])}
