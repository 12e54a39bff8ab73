"""The one client for OpenAI-compatible servers, against a real HTTP server on the loopback interface."""

from __future__ import annotations

import numpy as np
import pytest

from tests.peers.loopback import openai_server
from unisono.peers.openai_client import OpenAIClient, ServerConfig, ServerError, api_base


@pytest.mark.parametrize("url, base", [
    ("http://h:8000/v1", "http://h:8000/v1"),
    ("http://h:8000/v1/", "http://h:8000/v1"),
    ("http://h:8000/v1/audio/transcriptions", "http://h:8000/v1"),
    ("https://api.example.org/v1/chat/completions/", "https://api.example.org/v1"),
])
def test_api_base(url, base):
    assert api_base(url) == base


def test_transcribe_sends_a_16_bit_wav_the_model_and_the_key(monkeypatch):
    audio = (0.5 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16000)).astype(np.float32)
    monkeypatch.setenv("TEST_SERVER_KEY", "sk-test")
    with openai_server(transcribe=lambda a, fields: f" {len(a)} samples ") as server:
        client = OpenAIClient(ServerConfig(url=server.url + "/audio/transcriptions", key_env="TEST_SERVER_KEY"))
        assert client.transcribe(audio, model="tiny", language="en") == "8000 samples"
        assert client.transcribe(audio, model="tiny") == "8000 samples"
    first, second = server.requests
    assert first["path"] == "/v1/audio/transcriptions" and first["auth"] == "Bearer sk-test"
    assert first["fields"]["model"] == "tiny" and first["fields"]["language"] == "en"
    assert "language" not in second["fields"]  # no hint given: none sent, the server detects it
    assert first["rate"] == 16000 and np.abs(first["audio"] - audio).max() <= 1 / 32767  # 16-bit PCM


def test_no_key_no_authorization_header(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with openai_server(transcribe=lambda a, fields: "ok") as server:
        assert OpenAIClient(ServerConfig(url=server.url)).transcribe(np.zeros(1600, np.float32), model="m") == "ok"
    assert server.requests[0]["auth"] is None


def test_chat_sends_the_messages_and_reads_the_reply():
    messages = [{"role": "system", "content": "Shout."}, {"role": "user", "content": "hello there"}]
    with openai_server(chat=lambda body: body["messages"][-1]["content"].upper() + "! ") as server:
        assert OpenAIClient(ServerConfig(url=server.url)).chat(messages, model="m", temperature=0.0) == "HELLO THERE!"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["messages"] == messages and request["body"]["model"] == "m" and request["body"]["temperature"] == 0


@pytest.mark.parametrize("answer, match", [
    ({"fail": (500, "overloaded")}, "answered 500: overloaded"),
    ({"fail": (401, "bad key")}, "answered 401"),
    ({"raw": "not json"}, "no 'text'"),
    ({"raw": {"x": 1}}, "no 'text'"),
])
def test_transcription_failures_are_one_server_error(answer, match):
    with openai_server(**answer) as server:
        client = OpenAIClient(ServerConfig(url=server.url, retries=0))
        with pytest.raises(ServerError, match=match) as e:
            client.transcribe(np.zeros(1600, np.float32), model="m")
    assert server.url + "/audio/transcriptions" in str(e.value) and "\n" not in str(e.value)


def test_chat_failures_are_one_server_error():
    with openai_server(raw={"choices": []}) as server:
        with pytest.raises(ServerError, match="no message"):
            OpenAIClient(ServerConfig(url=server.url, retries=0)).chat([{"role": "user", "content": "hi"}], model="m")


def test_a_transient_error_is_retried():
    with openai_server(fail=(503, "warming up")) as server:
        with pytest.raises(ServerError, match="503"):
            OpenAIClient(ServerConfig(url=server.url, retries=1)).transcribe(np.zeros(1600, np.float32), model="m")
    assert len(server.requests) == 2  # the first try and one retry


def test_an_unreachable_server_is_a_server_error():
    client = OpenAIClient(ServerConfig(url="http://127.0.0.1:9/v1", timeout_s=2, retries=0))  # port 9 (discard): nothing listens
    with pytest.raises(ServerError, match="127.0.0.1:9"):
        client.transcribe(np.zeros(1600, np.float32), model="m")
