"""System adapters: spec parsing, the peers on real speech, a unisono checkpoint, an OpenAI-style server."""

from __future__ import annotations

import email.parser
import email.policy
import io
import json

import httpx
import numpy as np
import pytest
import soundfile as sf
from tests.conftest import make_tiny_model

from unisono.audio.io import load_audio
from unisono.eval.metrics import count_errors
from unisono.eval.normalize import make_scoring
from unisono.eval.systems import (
    SYSTEMS,
    OpenAIConfig,
    OpenAISystem,
    SystemSpec,
    SystemSpecError,
    TranscriptionError,
    build_system,
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


def wer(ref: str, hyp: str) -> float:
    en = make_scoring("en").normalize
    return count_errors(en(ref), en(hyp), "word").rate


# ---- specs ----------------------------------------------------------------------------------
def test_spec_parsing():
    s = SystemSpec.parse("faster-whisper:float32:beam5:name=fw")
    assert (s.kind, s.args, s.options) == ("faster-whisper", ["float32", "beam5"], {"name": "fw"})
    s = SystemSpec.parse("openai:http://localhost:8000/v1:model=whisper-1")  # a URL's colons do not split
    assert s.args == ["http://localhost:8000/v1"] and s.options == {"model": "whisper-1"}
    s = SystemSpec.parse("openai:url=https://example.org:8443/v1:timeout=5")
    assert s.options == {"url": "https://example.org:8443/v1", "timeout": "5"}
    assert split_specs(" faster-whisper:int8:beam1, pocketsphinx ,") == ["faster-whisper:int8:beam1", "pocketsphinx"]
    with pytest.raises(SystemSpecError):
        SystemSpec.parse("pocketsphinx::x")


@pytest.mark.parametrize("spec, match", [
    ("whisper-large", "unknown system"),
    ("faster-whisper:int9", "unknown option"),  # a typo must not run another system
    ("pocketsphinx:beam5", "unknown option"),
    ("unisono:a:b", "unknown option"),
    ("unisono:drafts=x", "drafts"),
    ("openai", "URL"),
])
def test_bad_specs_are_refused_before_loading(spec, match):
    with pytest.raises(SystemSpecError, match=match):
        build_system(spec)


def test_every_system_kind_is_registered():
    assert set(SYSTEMS) == {"faster-whisper", "pocketsphinx", "unisono", "openai"}


# ---- the peers on real speech -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("spec", ["faster-whisper:int8:beam1", "faster-whisper:float32:beam5"])
def test_faster_whisper_on_real_speech(spec, lj_clip, an4_clip):
    system = build_system(spec, threads=1)
    assert system.languages == frozenset({"en"}) and not system.supports("zh")
    audio, ref = lj_clip
    assert wer(ref, system.transcribe(audio, "en")) <= 0.25
    audio, ref = an4_clip
    an4 = make_scoring("an4").normalize
    assert count_errors(an4(ref), an4(system.transcribe(audio, "en")), "char").rate <= 0.2


def warble(seconds: float, f0: float, rate: float) -> np.ndarray:
    """A gated, warbling tone: no words, so tiny.en's first decodings of it fail their checks."""
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (f0 + 0.4 * f0 * np.sin(2 * np.pi * 3 * t)) * t)
            * np.sign(np.sin(2 * np.pi * rate * t))).astype(np.float32)


@pytest.mark.slow
def test_faster_whisper_fallback_samples_and_still_repeats_itself(lj_clip):
    system = build_system("faster-whisper:beam5:fallback", threads=1)
    assert system.name == "faster-whisper tiny.en int8 beam5 fallback"
    a, b = warble(3.0, 150, 4), warble(3.0, 200, 5)
    first = system.transcribe(a)
    assert system.transcribe(b) is not None and system.transcribe(a) == first  # b's samples do not reach a's
    # the premise: on `a` the greedy decoding is rejected and the text comes from sampling
    segments, _ = system.model.transcribe(a, beam_size=5, language="en", temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                          vad_filter=False, condition_on_previous_text=False)
    assert any(s.temperature > 0 for s in segments)
    audio, ref = lj_clip
    assert wer(ref, system.transcribe(audio)) <= 0.25


def test_pocketsphinx_on_real_speech(lj_clip):
    system = build_system("pocketsphinx")
    assert system.threads == 1 and system.supports("en") and not system.supports("zh")
    audio, ref = lj_clip
    hyp = system.transcribe(audio)
    assert wer(ref, hyp) <= 0.5
    assert system.transcribe(audio) == hyp  # no state carried from one clip to the next
    assert isinstance(system.transcribe(np.zeros(16000, np.float32)), str)  # digital silence: no crash


def test_named_system(lj_clip):
    assert build_system("pocketsphinx:name=sphinx").name == "sphinx"


# ---- a unisono checkpoint ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tiny_tokenizer, tmp_path_factory):
    return make_tiny_model(tiny_tokenizer, seed=7).save(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.mark.slow
def test_unisono_adapter_matches_the_model(checkpoint, lj_clip):
    from unisono.model.unisono import Unisono

    audio, _ = lj_clip
    mtp = build_system(f"unisono:{checkpoint}")
    greedy = build_system(f"unisono:{checkpoint}:greedy")
    assert mtp.name == "unisono tiny mtp" and greedy.name == "unisono tiny greedy" and mtp.languages is None
    direct = Unisono.load(checkpoint).transcribe(audio, language="en", batch_size=1).text
    assert mtp.transcribe(audio, "en") == direct == greedy.transcribe(audio, "en")
    s, g = mtp.decode_stats(), greedy.decode_stats()
    assert s.n_branches == 5 and s.tokens == g.tokens == g.passes and s.passes <= g.passes
    assert isinstance(mtp.transcribe(audio, "fr"), str)  # a language without a prompt token: no hint


# ---- an OpenAI-compatible server --------------------------------------------------------------
def _multipart(request: httpx.Request) -> dict[str, bytes]:
    raw = b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + request.read()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True) for part in msg.iter_parts()}


def test_openai_adapter_sends_the_audio_and_reads_the_text(lj_clip, monkeypatch):
    audio, _ = lj_clip
    seen = {}

    def server(request: httpx.Request) -> httpx.Response:
        fields = _multipart(request)
        seen.update(url=str(request.url), auth=request.headers.get("authorization"), model=fields["model"], language=fields.get("language"))
        received, sr = sf.read(io.BytesIO(fields["file"]), dtype="float32")
        seen.update(sr=sr, max_diff=float(np.abs(received - audio).max()), n=len(received))
        return httpx.Response(200, json={"text": " in being comparatively modern. "})

    monkeypatch.setenv("TEST_ASR_KEY", "sk-test")
    system = OpenAISystem(OpenAIConfig(url="http://asr.local/v1/", model="tiny", key_env="TEST_ASR_KEY"), transport=httpx.MockTransport(server))
    assert system.transcribe(audio, "en") == "in being comparatively modern."
    assert seen["url"] == "http://asr.local/v1/audio/transcriptions"
    assert seen["auth"] == "Bearer sk-test" and seen["model"] == b"tiny" and seen["language"] == b"en"
    assert seen["sr"] == 16000 and seen["n"] == len(audio) and seen["max_diff"] < 1e-4  # 16-bit PCM round trip


@pytest.mark.parametrize("response", [httpx.Response(500, text="overloaded"), httpx.Response(200, text="not json"), httpx.Response(200, json={"x": 1})])
def test_openai_adapter_errors_are_transcription_errors(response):
    system = OpenAISystem(OpenAIConfig(url="http://asr.local/v1"), transport=httpx.MockTransport(lambda r: response))
    with pytest.raises(TranscriptionError, match="asr.local"):
        system.transcribe(np.zeros(1600, np.float32))


def test_openai_adapter_unreachable_server():
    system = build_system("openai:http://127.0.0.1:9/v1:timeout=2")  # port 9 (discard): nothing listens
    with pytest.raises(TranscriptionError):
        system.transcribe(np.zeros(1600, np.float32))
