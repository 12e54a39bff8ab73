"""The server against the official `openai` client: every answer checked against the model's
own output computed in-process (greedy decoding is deterministic)."""

from __future__ import annotations

import base64
import json

import httpx2 as httpx  # the HTTP client the openai package is built on
import numpy as np
import openai
import pytest
from tests.serve.conftest import KEY, greedy_reply, wait_idle

from unisono.audio.io import load_audio
from unisono.modes.asr import to_srt, to_vtt
from unisono.model.vocab import Turn


def _wav_b64(samples: np.ndarray) -> str:
    from unisono.audio.io import encode_audio

    return base64.b64encode(encode_audio(samples, 16000, "wav")).decode()


@pytest.fixture(scope="module")
def wav(example_wav):
    return example_wav


@pytest.fixture(scope="module")
def reference(serve_model, wav):
    return serve_model.transcribe(wav)


def test_models_health_and_metrics(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    text = httpx.get(server.url + "/metrics").text
    assert 'unisono_requests_total{endpoint="models",status="200"}' in text
    assert "unisono_active_sessions" in text


def test_transcription_formats_match_the_model(client, wav, reference):
    with open(wav, "rb") as f:
        plain = client.audio.transcriptions.create(model="tiny", file=f)
    assert plain.text == reference.text
    assert plain.usage.seconds == pytest.approx(reference.duration, abs=1e-3)
    assert client.audio.transcriptions.create(model="tiny", file=wav, response_format="text") == reference.text + "\n"
    assert client.audio.transcriptions.create(model="tiny", file=wav, response_format="srt") == to_srt(reference)
    assert client.audio.transcriptions.create(model="tiny", file=wav, response_format="vtt") == to_vtt(reference)
    verbose = client.audio.transcriptions.create(model="tiny", file=wav, response_format="verbose_json",
                                                 timestamp_granularities=["segment"])
    assert verbose.text == reference.text and verbose.duration == pytest.approx(reference.duration, abs=1e-3)
    assert [(s.start, s.end, s.text) for s in verbose.segments] == [(s.start, s.end, s.text) for s in reference.segments]


def test_streamed_transcription_adds_up_to_the_text(client, wav, reference):
    events = list(client.audio.transcriptions.create(model="tiny", file=wav, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert events[-1].type == "transcript.text.done" and events[-1].text == reference.text
    assert "".join(deltas) == reference.text and len(deltas) > 1


def test_chat_text_and_audio_match_the_model(client, serve_model, wav):
    messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Hello there"}]
    text, n_prompt, n_out = greedy_reply(serve_model, [Turn("system", ["You are brief."]), Turn("user", ["Hello there"])], 24)
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0)
    assert reply.choices[0].message.content == text
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (n_prompt, n_out)
    assert reply.choices[0].finish_reason == ("length" if n_out == 24 else "stop")

    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == n_out

    audio = load_audio(wav)
    data = base64.b64encode(wav.read_bytes()).decode()
    spoken = [{"role": "user", "content": [{"type": "text", "text": "Answer this:"},
                                           {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}]}]
    expected, n_prompt, _ = greedy_reply(serve_model, [Turn("user", ["Answer this:", None])], 16, audio=audio)
    reply = client.chat.completions.create(model="tiny", messages=spoken, max_tokens=16, temperature=0)
    assert reply.choices[0].message.content == expected
    assert reply.usage.prompt_tokens == n_prompt


def test_seeded_sampling_repeats(client):
    messages = [{"role": "user", "content": "Say something"}]
    a = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0.9, seed=7)
    b = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0.9, seed=7)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_unavailable_abilities_are_clear_400s(client, wav):
    with pytest.raises(openai.BadRequestError, match="cannot speak"):
        client.audio.speech.create(model="tiny", voice="alloy", input="Hello")
    with pytest.raises(openai.BadRequestError, match="cannot translate"):
        client.audio.translations.create(model="tiny", file=wav)
    with pytest.raises(openai.BadRequestError, match="cannot speak"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                       modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})


@pytest.mark.parametrize("call, status, words", [
    (lambda c, w: c.audio.transcriptions.create(model="whisper-1", file=w), 404, "does not exist"),
    (lambda c, w: c.audio.transcriptions.create(model="tiny", file=w, response_format="xml"), 400, "response_format"),
    (lambda c, w: c.audio.transcriptions.create(model="tiny", file=w, language="fr"), 400, "language"),
    (lambda c, w: c.audio.transcriptions.create(model="tiny", file=w, prompt="Names: Zoë"), 400, "prompt"),
    (lambda c, w: c.audio.transcriptions.create(model="tiny", file=("x.wav", b"RIFF\x00\x00garbage")), 400,
     "x.wav: not a readable audio file (Format not recognised"),
    (lambda c, w: c.audio.transcriptions.create(model="tiny", file=("x.wav", b"")), 400, "empty"),
    (lambda c, w: c.chat.completions.create(model="tiny", messages=[]), 400, "messages"),
    (lambda c, w: c.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "x"}]), 400, "role"),
    (lambda c, w: c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=10**6), 400, "max_tokens"),
    (lambda c, w: c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}]}]), 400, "base64"),
    (lambda c, w: c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": _wav_b64(np.zeros(16000 * 35, np.float32)), "format": "wav"}}]}]),
     400, "at most 30 s"),
])
def test_bad_requests_get_openai_errors(client, wav, call, status, words):
    with pytest.raises(openai.APIStatusError) as e:
        call(client, wav)
    assert e.value.status_code == status
    assert words in e.value.message
    assert "Traceback" not in e.value.response.text and set(e.value.body) >= {"message", "type"}


def test_keys_size_and_raw_bad_bodies(server, wav):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.v1, api_key="sk-wrong", max_retries=0).models.list()
    r = httpx.get(server.v1 + "/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    auth = {"Authorization": f"Bearer {KEY}"}
    big = np.zeros(16000 * 70, np.int16).tobytes()  # 2.1 MB: over the test server's 2 MB
    r = httpx.post(server.v1 + "/audio/transcriptions", headers=auth, files={"file": ("big.raw", big)},
                   data={"model": "tiny"})
    assert r.status_code == 413, r.text

    def chunked():
        yield b"x" * (3 * 2**20)

    r = httpx.post(server.v1 + "/chat/completions", headers={**auth, "Content-Type": "application/json"}, content=chunked())
    assert r.status_code == 413
    r = httpx.post(server.v1 + "/chat/completions", headers={**auth, "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(server.v1 + "/chat/completions", headers=auth, json=[1, 2])
    assert r.status_code == 400
    r = httpx.post(server.v1 + "/audio/transcriptions", headers=auth, data={"model": "tiny"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"


def test_a_client_that_leaves_mid_stream_frees_its_session(server, serve_model):

    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Talk"}], "max_tokens": 64, "stream": True,
            "temperature": 0}
    with httpx.stream("POST", server.v1 + "/chat/completions", headers=auth, json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                break  # the first words, then gone
    assert wait_idle(server.engine) == 0


def test_a_key_over_its_concurrency_gets_429(serve_model):
    import threading
    import time

    from tests.serve.conftest import start_server

    from unisono.serve.config import ServerConfig

    running, server, thread = start_server(serve_model, ServerConfig(max_concurrent_per_key=1), name="solo")
    try:
        def slow_body():  # holds the one slot while its body trickles in
            yield b'{"model": "solo", '
            time.sleep(1.5)
            yield b'"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}'

        first: dict = {}
        t = threading.Thread(target=lambda: first.setdefault("r", httpx.post(
            running.v1 + "/chat/completions", content=slow_body(), headers={"Content-Type": "application/json"},
            timeout=60)))
        t.start()
        time.sleep(0.5)
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=running.v1, api_key="none", max_retries=0).models.list()
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        with pytest.raises(InvalidStatus) as refused:  # a realtime session counts against the same limit
            connect(running.v1.replace("http://", "ws://") + "/realtime", open_timeout=10).close()
        assert refused.value.response.status_code == 429
        t.join()
        assert first["r"].status_code == 200
        assert openai.OpenAI(base_url=running.v1, api_key="none", max_retries=0).models.list().data[0].id == "solo"
        metrics = httpx.get(running.url + "/metrics").text
        assert 'unisono_requests_total{endpoint="models",status="429"} 1.0' in metrics
        assert 'unisono_generated_tokens_total{endpoint="chat"}' in metrics
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def speaking(speaking_server):
    return openai.OpenAI(base_url=speaking_server.v1, api_key="none", max_retries=0, timeout=300)


def test_speech_streams_the_same_audio_in_every_format(speaking):
    import soundfile as sf

    ask = dict(model="unisono-tiny", voice="lj", input="Hello there. Good day.", extra_body={"seed": 9})
    with speaking.audio.speech.with_streaming_response.create(response_format="pcm", **ask) as r:
        parts = list(r.iter_bytes())
    pcm = b"".join(parts)
    assert len(parts) > 2  # it arrived in pieces, as it was decoded
    assert pcm == speaking.audio.speech.create(response_format="pcm", **ask).content  # a seed repeats
    wav = speaking.audio.speech.create(response_format="wav", **ask).content
    samples16 = np.frombuffer(wav[44:], "<i2")
    assert len(pcm) // 2 == pytest.approx(len(samples16) * 1.5, abs=4)  # pcm is at 24 kHz, the wav at 16 kHz
    flac, rate = sf.read(__import__("io").BytesIO(speaking.audio.speech.create(response_format="flac", **ask).content),
                         dtype="int16")
    assert rate == 16000 and np.abs(flac.astype(int) - samples16).max() <= 1  # libsndfile rounds a few ties apart
    other = speaking.audio.speech.create(response_format="pcm", **{**ask, "extra_body": {"seed": 10}}).content
    assert other != pcm
    with httpx.stream("POST", str(speaking.base_url) + "audio/speech", timeout=300,
                       json={"model": "unisono-tiny", "input": "Hello there. Good day.", "seed": 9, "voice": "lj",
                             "response_format": "pcm", "stream_format": "sse"}) as r:
        lines = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1]["type"] == "speech.audio.done" and lines[-1]["usage"]["output_tokens"] > 0
    assert b"".join(base64.b64decode(e["audio"]) for e in lines[:-1]) == pcm


def test_speech_refuses_what_it_cannot_do(speaking):
    for fields, words in [({"voice": "alloy"}, "no voice named 'alloy'"), ({"response_format": "mp3"}, "response_format"),
                          ({"input": " "}, "input"), ({"speed": 3.0}, "speed"), ({"seed": "x"}, "seed"),
                          ({"instructions": 5}, "instructions")]:
        ask = {"model": "unisono-tiny", "voice": "lj", "input": "Hi.", **fields}
        extra = {k: ask.pop(k) for k in ("seed",) if k in ask}
        with pytest.raises(openai.BadRequestError, match=words):
            speaking.audio.speech.create(**ask, extra_body=extra)


def test_chat_replies_can_be_spoken(speaking):
    import io

    import soundfile as sf

    messages = [{"role": "user", "content": "Say hello"}]
    reply = speaking.chat.completions.create(model="unisono-tiny", messages=messages, max_tokens=8, temperature=0,
                                             modalities=["text", "audio"], audio={"voice": "lj", "format": "wav"})
    audio = reply.choices[0].message.audio
    text = speaking.chat.completions.create(model="unisono-tiny", messages=messages, max_tokens=8,
                                            temperature=0).choices[0].message.content
    assert audio.transcript == text and reply.choices[0].message.content is None
    samples, rate = sf.read(io.BytesIO(base64.b64decode(audio.data)))
    assert rate == 24000 and len(samples) > 2400
    chunks = list(speaking.chat.completions.create(
        model="unisono-tiny", messages=messages, max_tokens=8, temperature=0, stream=True,
        modalities=["text", "audio"], audio={"voice": "lj", "format": "pcm16"}))
    deltas = [c.choices[0].delta.audio.to_dict() for c in chunks if c.choices and c.choices[0].delta.audio]
    assert "".join(d.get("transcript", "") for d in deltas) == text
    assert sum(len(base64.b64decode(d["data"])) for d in deltas if d.get("data")) > 4800
    with pytest.raises(openai.BadRequestError, match="pcm16"):
        speaking.chat.completions.create(model="unisono-tiny", messages=messages, stream=True,
                                         modalities=["text", "audio"], audio={"voice": "lj", "format": "wav"})
