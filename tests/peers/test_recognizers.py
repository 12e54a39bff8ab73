"""The recogniser registry: specs, the bundled peers on real speech, a unisono checkpoint, an OpenAI-compatible server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import make_tiny_model
from tests.peers.loopback import openai_server
from unisono.audio.io import load_audio
from unisono.eval.metrics import count_errors
from unisono.eval.normalize import make_scoring
from unisono.peers.recognizers import (
    RECOGNIZERS,
    Recognizer,
    Spec,
    SpecError,
    TranscriptionError,
    build_recognizer,
    check_spec,
    split_specs,
)


@pytest.fixture(scope="module")
def lj_clip(real_speech_dir):
    row = json.loads((real_speech_dir / "ljspeech_lj001" / "manifest.jsonl").read_text().splitlines()[1])  # 1.9 s
    return load_audio(real_speech_dir / "ljspeech_lj001" / row["audio"]), row["text"]


@pytest.fixture(scope="module")
def an4_clip(real_speech_dir):
    row = json.loads((real_speech_dir / "an4_test" / "manifest.jsonl").read_text().splitlines()[0])
    return load_audio(real_speech_dir / "an4_test" / row["audio"]), row["text"]


@pytest.fixture(scope="module")
def whisper():
    return build_recognizer("faster-whisper")


def wer(ref: str, hyp: str) -> float:
    en = make_scoring("en").normalize
    return count_errors(en(ref), en(hyp), "word").rate


# ---- specs ----------------------------------------------------------------------------------
def test_spec_parsing():
    s = Spec.parse("faster-whisper:float32:beam5:name=fw")
    assert (s.kind, s.args, s.options) == ("faster-whisper", ["float32", "beam5"], {"name": "fw"})
    s = Spec.parse("openai:http://localhost:8000/v1:model=whisper-1")  # a URL's colons do not split
    assert s.args == ["http://localhost:8000/v1"] and s.options == {"model": "whisper-1"}
    s = Spec.parse("openai:url=https://example.org:8443/v1:timeout=5")
    assert s.options == {"url": "https://example.org:8443/v1", "timeout": "5"}
    assert split_specs(" faster-whisper:int8:beam1, pocketsphinx ,") == ["faster-whisper:int8:beam1", "pocketsphinx"]
    with pytest.raises(SpecError):
        Spec.parse("pocketsphinx::x")


def test_every_recogniser_kind_is_registered():
    assert set(RECOGNIZERS) == {"faster-whisper", "pocketsphinx", "unisono", "openai"}
    assert all(issubclass(c, Recognizer) and c.kind == k for k, c in RECOGNIZERS.items())


@pytest.mark.parametrize("spec, match", [
    ("whisper-large", "unknown recogniser"),
    ("faster-whisper:int9", "unknown option"),  # a typo must not run another recogniser
    ("faster-whisper:beamX", "unknown option"),
    ("pocketsphinx:beam5", "unknown option"),
    ("unisono:a:b", "unknown option"),
    ("unisono:drafts=x", "drafts"),
    ("unisono:no/such/dir", "no unisono checkpoint"),
    ("openai", "URL"),
    ("openai:http://127.0.0.1:9/v1:timeout=soon", "numbers"),
])
def test_bad_specs_are_refused_before_loading(spec, match):
    with pytest.raises(SpecError, match=match):
        build_recognizer(spec)
    with pytest.raises(ValueError, match=match):  # the data engine's and the CLIs' check, the same refusal
        check_spec(spec)


def test_missing_model_files_are_refused(tmp_path):
    for spec, match in ((f"faster-whisper:model={tmp_path}", "no CTranslate2 Whisper model"),
                        (f"unisono:{tmp_path}", "config.json is missing"),
                        (f"pocketsphinx:lm={tmp_path}/x.lm", "no lm file"),
                        (f"pocketsphinx:hmm={tmp_path}/en", "no hmm folder")):
        with pytest.raises(SpecError, match=match):
            check_spec(spec)


def test_check_spec_loads_nothing(monkeypatch, tmp_path):
    import faster_whisper
    import pocketsphinx

    def no_loading(*args, **kwargs):
        raise AssertionError("check_spec loaded a model")

    monkeypatch.setattr(faster_whisper, "WhisperModel", no_loading)
    monkeypatch.setattr(pocketsphinx, "Decoder", no_loading)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    for spec in ("faster-whisper", "faster-whisper:beam5:float32", "pocketsphinx", "unisono", f"unisono:{tmp_path / 'ckpt'}:greedy",
                 "openai:http://127.0.0.1:9/v1:model=whisper-1:retries=0"):
        check_spec(spec)
    with pytest.raises(AssertionError, match="loaded a model"):
        build_recognizer("pocketsphinx")  # the premise: building does load


# ---- the bundled peers on real speech ---------------------------------------------------------
def test_faster_whisper_default_on_real_speech(whisper, lj_clip):
    assert whisper.name == "faster-whisper tiny.en int8 beam1" and whisper.spec == "faster-whisper"
    assert whisper.languages == frozenset({"en"}) and whisper.supports("en-US") and not whisper.supports("zh")
    audio, ref = lj_clip
    text = whisper.transcribe(audio, "en")
    assert wer(ref, text) <= 0.25, text
    assert whisper.transcribe(audio, "en") == text  # temperature 0: the same text every time


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["faster-whisper:int8:beam1", "faster-whisper:float32:beam5"])
def test_faster_whisper_on_real_speech(spec, lj_clip, an4_clip):
    recognizer = build_recognizer(spec, threads=1)
    assert recognizer.languages == frozenset({"en"}) and not recognizer.supports("zh")
    audio, ref = lj_clip
    assert wer(ref, recognizer.transcribe(audio, "en")) <= 0.25
    audio, ref = an4_clip
    an4 = make_scoring("an4").normalize
    assert count_errors(an4(ref), an4(recognizer.transcribe(audio, "en")), "char").rate <= 0.2


def warble(seconds: float, f0: float, rate: float) -> np.ndarray:
    """A gated, warbling tone: no words, so tiny.en's first decodings of it fail their checks."""
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (f0 + 0.4 * f0 * np.sin(2 * np.pi * 3 * t)) * t)
            * np.sign(np.sin(2 * np.pi * rate * t))).astype(np.float32)


@pytest.mark.slow
def test_faster_whisper_fallback_samples_and_still_repeats_itself(lj_clip):
    recognizer = build_recognizer("faster-whisper:beam5:fallback", threads=1)
    assert recognizer.name == "faster-whisper tiny.en int8 beam5 fallback"
    a, b = warble(3.0, 150, 4), warble(3.0, 200, 5)
    first = recognizer.transcribe(a)
    assert recognizer.transcribe(b) is not None and recognizer.transcribe(a) == first  # b's samples do not reach a's
    # the premise: on `a` the greedy decoding is rejected and the text comes from sampling
    segments, _ = recognizer.model.transcribe(a, beam_size=5, language="en", temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                              vad_filter=False, condition_on_previous_text=False)
    assert any(s.temperature > 0 for s in segments)
    audio, ref = lj_clip
    assert wer(ref, recognizer.transcribe(audio)) <= 0.25


def test_pocketsphinx_on_real_speech(lj_clip):
    recognizer = build_recognizer("pocketsphinx")
    assert recognizer.name == "pocketsphinx en-us" and recognizer.threads == 1
    assert recognizer.supports("en") and not recognizer.supports("zh")
    audio, ref = lj_clip
    hyp = recognizer.transcribe(audio)
    assert wer(ref, hyp) <= 0.5
    assert recognizer.transcribe(audio) == hyp  # no state carried from one clip to the next
    assert isinstance(recognizer.transcribe(np.zeros(16000, np.float32)), str)  # digital silence: no crash


def test_named_recognizer():
    assert build_recognizer("pocketsphinx:name=sphinx").name == "sphinx"


# ---- a unisono checkpoint ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tiny_tokenizer, tmp_path_factory):
    return make_tiny_model(tiny_tokenizer, seed=7).save(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.mark.slow
def test_unisono_recognizer_matches_the_model(checkpoint, lj_clip):
    from unisono.model.unisono import Unisono

    audio, _ = lj_clip
    mtp = build_recognizer(f"unisono:{checkpoint}")
    greedy = build_recognizer(f"unisono:{checkpoint}:greedy")
    assert mtp.name == "unisono tiny mtp" and greedy.name == "unisono tiny greedy" and mtp.languages is None
    direct = Unisono.load(checkpoint).transcribe(audio, language="en", batch_size=1).text
    assert mtp.transcribe(audio, "en") == direct == greedy.transcribe(audio, "en")
    s, g = mtp.decode_stats(), greedy.decode_stats()
    assert s.n_branches == 5 and s.tokens == g.tokens == g.passes and s.passes <= g.passes
    assert isinstance(mtp.transcribe(audio, "fr"), str)  # a language without a prompt token: no hint


# ---- an OpenAI-compatible server --------------------------------------------------------------
def test_openai_recognizer_through_a_server_running_whisper(whisper, lj_clip, monkeypatch):
    """The whole path: the clip goes over HTTP as a 16-bit WAV, the server transcribes it with the
    bundled Whisper tiny.en, and the text that comes back is what Whisper writes for that WAV."""
    audio, ref = lj_clip
    monkeypatch.setenv("TEST_ASR_KEY", "sk-test")
    with openai_server(transcribe=lambda a, fields: " " + whisper.transcribe(a, fields.get("language")) + " ") as server:
        recognizer = build_recognizer(f"openai:{server.url}/:model=tiny.en:key_env=TEST_ASR_KEY:timeout=60")
        assert recognizer.name == "openai tiny.en" and recognizer.supports("zh")
        text = recognizer.transcribe(audio, "en")
    (request,) = server.requests
    assert request["path"] == "/v1/audio/transcriptions" and request["auth"] == "Bearer sk-test"
    assert request["fields"]["model"] == "tiny.en" and request["fields"]["language"] == "en" and request["rate"] == 16000
    sent = np.round(np.clip(audio, -1, 1) * 32767) / 32767  # what a 16-bit WAV holds
    assert np.abs(request["audio"] - sent).max() < 1e-4
    assert text == whisper.transcribe(request["audio"], "en") and wer(ref, text) <= 0.25


@pytest.mark.parametrize("answer, match", [
    ({"fail": (500, "overloaded")}, "500"),
    ({"raw": "not json"}, "no 'text'"),
    ({"raw": {"x": 1}}, "no 'text'"),
])
def test_openai_recognizer_failures_are_transcription_errors(answer, match):
    with openai_server(**answer) as server:
        recognizer = build_recognizer(f"openai:{server.url}:retries=0")
        with pytest.raises(TranscriptionError, match=match):
            recognizer.transcribe(np.zeros(1600, np.float32))


def test_openai_recognizer_unreachable_server():
    recognizer = build_recognizer("openai:http://127.0.0.1:9/v1:timeout=2:retries=0")  # port 9 (discard): nothing listens
    with pytest.raises(TranscriptionError, match="127.0.0.1:9"):
        recognizer.transcribe(np.zeros(1600, np.float32))
