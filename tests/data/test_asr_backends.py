import httpx
import numpy as np
import pytest

from unisono.audio.io import load_audio
from unisono.data.asr_backends import OpenAIBackend, OpenAIConfig, TranscriptionError, build_backend, supports
from unisono.data.crossval import normalizer, word_error_rate


def test_spec_errors_are_clear():
    with pytest.raises(ValueError, match="unknown recogniser"):
        build_backend("kaldi")
    with pytest.raises(ValueError, match="unknown whisper option"):
        build_backend("whisper:beamX")
    with pytest.raises(ValueError, match="checkpoint directory"):
        build_backend("unisono")
    with pytest.raises(ValueError, match="server's URL"):
        build_backend("openai:")


def test_openai_spec_keeps_the_url_whole():
    b = build_backend("openai:http://localhost:8000/v1:model=whisper-large")
    assert b.endpoint == "http://localhost:8000/v1/audio/transcriptions" and b.config.model == "whisper-large"


def test_openai_backend_posts_multipart_and_reads_text():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["body"] = request.content
        seen["url"] = str(request.url)
        return httpx.Response(200, json={"text": " hello world "})

    b = OpenAIBackend(OpenAIConfig(url="http://127.0.0.1:9/v1", model="m1"), transport=httpx.MockTransport(handler))
    assert b.transcribe(np.zeros(1600, np.float32), "en") == "hello world"
    assert seen["url"].endswith("/v1/audio/transcriptions")
    assert b'name="model"' in seen["body"] and b"m1" in seen["body"] and b"RIFF" in seen["body"]
    assert supports(b, "zh")


def test_openai_backend_errors_become_transcription_errors():
    b = OpenAIBackend(OpenAIConfig(url="http://127.0.0.1:9/v1"), transport=httpx.MockTransport(lambda r: httpx.Response(500, text="boom")))
    with pytest.raises(TranscriptionError, match="500"):
        b.transcribe(np.zeros(1600, np.float32), "en")
    b = OpenAIBackend(OpenAIConfig(url="http://127.0.0.1:9/v1"), transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"x": 1})))
    with pytest.raises(TranscriptionError, match="no 'text'"):
        b.transcribe(np.zeros(1600, np.float32), "en")


def test_bundled_recognisers_transcribe_real_speech(real_speech_dir):
    import json

    d = real_speech_dir / "ljspeech_lj001"
    row = json.loads((d / "manifest.jsonl").read_text().splitlines()[1])
    audio = load_audio(d / row["audio"])
    norm = normalizer("en")
    for spec, bar in (("whisper", 0.15), ("pocketsphinx", 0.6)):
        b = build_backend(spec)
        assert supports(b, "en") and not supports(b, "zh")
        text = b.transcribe(audio, "en")
        assert word_error_rate(norm(row["text"]), norm(text)) <= bar, (spec, text)


def test_check_spec_loads_nothing_and_refuses_bad_specs(tmp_path):
    from unisono.data.asr_backends import check_spec

    for good in ("whisper", "whisper:beam5", "pocketsphinx", "openai:http://127.0.0.1:9/v1"):
        check_spec(good)
    for bad, msg in (("sphinx", "unknown recogniser"), (f"unisono:{tmp_path}", "no unisono checkpoint"),
                     ("whisper:fast", "unknown whisper option"), (f"whisper:model={tmp_path}/x", "no model folder")):
        with pytest.raises(ValueError, match=msg):
            check_spec(bad)


@pytest.mark.slow
def test_unisono_checkpoint_backend(tmp_path, tiny_tokenizer):
    from tests.conftest import make_tiny_model

    make_tiny_model(tiny_tokenizer).save(tmp_path / "ckpt")
    b = build_backend(f"unisono:{tmp_path / 'ckpt'}")
    assert b.name == "unisono-ckpt" and supports(b, "zh")
    # an untrained model writes anything; what matters is that the decoding path runs and stops
    text = b.transcribe(np.full(3200, 0.01, np.float32), "en")
    assert isinstance(text, str)
