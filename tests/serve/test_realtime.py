"""/v1/realtime with the official openai client and with raw websockets: event order, ids,
VAD turns, cancel, barge-in, clear, bad events, dropped clients."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import openai
import pytest
import soxr
from tests.serve.conftest import KEY, greedy_reply, wait_idle
from websockets.sync.client import connect

from unisono.audio.io import load_audio
from unisono.model.vocab import Turn


def pcm24(audio16: np.ndarray) -> bytes:
    return (np.clip(soxr.resample(audio16, 16000, 24000), -1, 1) * 32767).astype("<i2").tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def speech(example_wav) -> np.ndarray:
    return load_audio(example_wav)


def _ws(server, **headers):
    url = server.v1.replace("http://", "ws://") + "/realtime?model=tiny"
    return connect(url, additional_headers={"Authorization": f"Bearer {KEY}", **headers}, open_timeout=30)


def _until(ws, wanted: str, seen: list, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        event = json.loads(ws.recv(timeout=max(0.1, deadline - time.time())))
        seen.append(event)
        if event["type"] == wanted:
            return event
    raise AssertionError(f"no {wanted} in {[e['type'] for e in seen]}")


def test_openai_client_manual_turn_matches_the_model(server, serve_model, speech):
    client = openai.OpenAI(base_url=server.v1, api_key=KEY, max_retries=0)
    pcm = pcm24(speech)
    with client.realtime.connect(model="tiny") as conn:
        first = conn.recv()
        assert first.type == "session.created" and first.session.model == "tiny"
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "instructions": "Be brief.",
                                     "audio": {"input": {"turn_detection": None}}})
        assert conn.recv().type == "session.updated"
        for i in range(0, len(pcm), 9600):  # 200 ms appends
            conn.input_audio_buffer.append(audio=b64(pcm[i : i + 9600]))
        conn.input_audio_buffer.commit()
        events = []
        for event in conn:
            events.append(event)
            if event.type == "conversation.item.input_audio_transcription.completed":
                break
        conn.response.create()
        for event in conn:
            events.append(event)
            if event.type == "response.done":
                break
    kinds = [e.type for e in events]
    assert kinds[:3] == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    heard = soxr.resample(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, 24000, 16000)
    transcript = next(e for e in events if e.type.endswith("transcription.completed")).transcript
    assert transcript == serve_model.transcribe(heard).text
    assert "".join(e.delta for e in events if e.type.endswith("transcription.delta")) == transcript
    order = ["response.created", "response.output_item.added", "response.content_part.added",
             "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.done"]
    assert [k for k in kinds if k in order] == order
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    # the reply hears the turn's audio itself, as the chat mode's prompt holds it
    expected = greedy_reply(serve_model, [Turn("system", ["Be brief."]), Turn("user", [None])],
                            server.app.state.config.max_tokens, audio=heard)[0]
    assert text == expected
    done = events[-1].response
    assert done.status in ("completed", "incomplete") and done.output[0].content[0].text == text


def test_server_vad_commits_and_answers_by_itself(server, speech):
    silence = np.zeros(24000 * 2, "<i2").tobytes()
    pcm = np.zeros(24000 // 2, "<i2").tobytes() + pcm24(speech) + silence
    seen: list = []
    with _ws(server) as ws:
        _until(ws, "session.created", seen)
        ws.send(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
            "type": "server_vad", "silence_duration_ms": 800}}}}}))
        for i in range(0, len(pcm), 4800):  # 100 ms appends, as a microphone sends them
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(pcm[i : i + 4800])}))
        _until(ws, "response.done", seen)
        if not any(e["type"].endswith("transcription.completed") for e in seen):  # decoded beside the answer
            _until(ws, "conversation.item.input_audio_transcription.completed", seen)
    kinds = [e["type"] for e in seen]
    for a, b in [("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"),
                 ("input_audio_buffer.speech_stopped", "input_audio_buffer.committed"),
                 ("input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed"),
                 ("input_audio_buffer.committed", "response.created")]:  # the answer need not wait for the transcript
        assert kinds.index(a) < kinds.index(b), (a, b, kinds)
    started = next(e for e in seen if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in seen if e["type"] == "input_audio_buffer.speech_stopped")
    assert 300 <= started["audio_start_ms"] <= 800  # the speech begins after 500 ms of silence
    assert stopped["audio_end_ms"] - started["audio_start_ms"] == pytest.approx(len(speech) / 16, abs=1200)
    assert started["item_id"] == stopped["item_id"]
    ids = [e["event_id"] for e in seen]
    assert len(set(ids)) == len(ids)


def test_bad_events_get_errors_and_the_session_goes_on(server):
    seen: list = []
    with _ws(server) as ws:
        _until(ws, "session.created", seen)
        cases = [
            ("{not json", "invalid_json"),
            (json.dumps({"type": "no.such.event", "event_id": "e1"}), "unknown_event_type"),
            (json.dumps([1, 2]), "invalid_event"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "***"}), "invalid_audio"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (12 * 2**20)}), "audio_too_large"),
            (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
            (json.dumps({"type": "response.cancel"}), "response_cancel_not_active"),
            (json.dumps({"type": "session.update", "session": {"output_modalities": ["audio"]}}), "invalid_value"),
            (json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}),
             "invalid_value"),
            (json.dumps({"type": "conversation.item.delete", "item_id": "nope"}), "item_not_found"),
        ]
        for raw, code in cases:
            ws.send(raw)
            error = _until(ws, "error", seen)
            assert error["error"]["code"] == code, (raw[:60], error)
            assert "Traceback" not in error["error"]["message"]
        ws.send(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}))
        _until(ws, "session.updated", seen)
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(b"\x00\x01" * 4800)}))
        ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        _until(ws, "input_audio_buffer.cleared", seen)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))  # cleared: nothing to commit
        assert _until(ws, "error", seen)["error"]["code"] == "input_audio_buffer_commit_empty"
    assert seen[0]["type"] == "session.created"
    error = next(e for e in seen if e["type"] == "error" and e["error"]["code"] == "unknown_event_type")
    assert error["error"]["event_id"] == "e1"


@pytest.fixture(scope="module")
def long_server(serve_model):
    """A server whose replies may run long enough to be interrupted."""
    from tests.serve.conftest import start_server

    from unisono.serve.config import ServerConfig

    running, server, thread = start_server(serve_model, ServerConfig(api_keys=(KEY,), max_tokens=1500), name="tiny")
    yield running
    server.should_exit = True
    thread.join(timeout=30)



def test_an_answer_started_at_a_pause_is_taken_back_when_the_user_goes_on(server, speech, monkeypatch):
    # the answer is prepared while the VAD waits out the silence; a pause shorter than that
    # silence must leave no trace: one turn, committed once, holding both sentences
    heard: list[int] = []
    transcribe = server.engine.transcribe

    def recording(audio, **kw):
        heard.append(len(audio))
        return transcribe(audio, **kw)

    monkeypatch.setattr(server.engine, "transcribe", recording)
    eager = server.app.state.metrics.eager_turns
    dropped, confirmed = (eager.labels(o)._value.get() for o in ("dropped", "confirmed"))
    gap = np.zeros(int(24000 * 0.35), "<i2").tobytes()
    pcm = np.zeros(24000 // 2, "<i2").tobytes() + pcm24(speech) + gap + pcm24(speech) + np.zeros(24000 * 2, "<i2").tobytes()
    seen: list = []
    with _ws(server) as ws:
        _until(ws, "session.created", seen)
        ws.send(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
            "type": "server_vad", "silence_duration_ms": 800}}}}}))
        for i in range(0, len(pcm), 4800):
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(pcm[i : i + 4800])}))
        _until(ws, "response.done", seen)
        if not any(e["type"].endswith("transcription.completed") for e in seen):
            _until(ws, "conversation.item.input_audio_transcription.completed", seen)
    kinds = [e["type"] for e in seen]
    assert kinds.count("input_audio_buffer.committed") == 1 and kinds.count("response.created") == 1
    assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
    assert eager.labels("dropped")._value.get() > dropped and eager.labels("confirmed")._value.get() == confirmed + 1
    assert heard[-1] >= 0.9 * (2 * len(speech) + 0.35 * 16000)  # the turn transcribed is both sentences

STORY = [Turn("user", ["Tell me a story"])]


def test_cancel_and_barge_in_end_the_response(long_server, serve_model, speech):
    # the precondition: left alone, this reply runs to the length limit (hundreds of decoder passes)
    assert greedy_reply(serve_model, STORY, 1500)[2] > 1000
    seen: list = []
    ask = {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                        "content": [{"type": "input_text", "text": "Tell me a story"}]}}
    with _ws(long_server) as ws:
        _until(ws, "session.created", seen)
        ws.send(json.dumps({"type": "session.update", "session": {"max_output_tokens": 1500}}))
        _until(ws, "session.updated", seen)
        ws.send(json.dumps(ask))
        _until(ws, "conversation.item.added", seen)
        ws.send(json.dumps({"type": "response.create"}))
        _until(ws, "response.output_text.delta", seen)
        ws.send(json.dumps({"type": "response.cancel"}))
        done = _until(ws, "response.done", seen)
        assert done["response"]["status"] == "cancelled"
        assert wait_idle(long_server.engine) == 0
        # barge-in: speech while a response runs cancels it
        ws.send(json.dumps({"type": "response.create"}))
        _until(ws, "response.output_text.delta", seen)
        pcm = pcm24(speech)
        for i in range(0, len(pcm), 4800):
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(pcm[i : i + 4800])}))
        done = _until(ws, "response.done", seen)
        assert done["response"]["status"] == "cancelled"
        kinds = [e["type"] for e in seen]
        assert kinds.index("input_audio_buffer.speech_started") < len(kinds) - 1  # speech first, then the cancel
        text = done["response"]["output"][0]["content"][0]["text"]
        assert text and len(text) < len(greedy_reply(serve_model, STORY, 1500)[0])  # cut off where it stood


def test_beta_clients_get_beta_names(server):
    seen: list = []
    with _ws(server, **{"OpenAI-Beta": "realtime=v1"}) as ws:
        created = _until(ws, "session.created", seen)
        assert created["session"]["modalities"] == ["text"] and created["session"]["input_audio_format"] == "pcm16"
        ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None, "modalities": ["text"]}}))
        assert _until(ws, "session.updated", seen)["session"]["turn_detection"] is None
        ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                        "content": [{"type": "input_text", "text": "hi"}]}}))
        _until(ws, "conversation.item.created", seen)
        ws.send(json.dumps({"type": "response.create"}))
        _until(ws, "response.done", seen)
    kinds = {e["type"] for e in seen}
    assert "response.text.done" in kinds and "response.output_text.done" not in kinds
    assert "conversation.item.added" not in kinds


def test_keys_are_required_and_a_dropped_client_frees_its_session(server):
    from websockets.exceptions import InvalidStatus

    url = server.v1.replace("http://", "ws://") + "/realtime"
    with pytest.raises(InvalidStatus) as refused:
        with connect(url, open_timeout=10) as ws:
            ws.recv(timeout=5)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["type"] == "authentication_error"
    with connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"], open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
        ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                        "content": [{"type": "input_text", "text": "Go"}]}}))
        ws.send(json.dumps({"type": "response.create", "response": {}}))
        while json.loads(ws.recv(timeout=60))["type"] != "response.created":
            pass
    # gone mid-response: its decoding stops and the scheduler is idle again
    assert wait_idle(server.engine) == 0


def test_a_speaking_model_answers_in_audio_with_its_transcript(speaking_server):
    seen: list = []
    url = speaking_server.v1.replace("http://", "ws://") + "/realtime?model=unisono-tiny"
    with connect(url, open_timeout=30) as ws:
        created = _until(ws, "session.created", seen)
        assert created["session"]["output_modalities"] == ["audio"]  # a model that speaks answers in speech
        assert created["session"]["audio"]["output"]["voice"] == "lj"
        ws.send(json.dumps({"type": "session.update", "session": {"max_output_tokens": 12}}))
        _until(ws, "session.updated", seen)
        ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                        "content": [{"type": "input_text", "text": "Hi"}]}}))
        ws.send(json.dumps({"type": "response.create"}))
        done = _until(ws, "response.done", seen)
    kinds = [e["type"] for e in seen]
    transcript = "".join(e["delta"] for e in seen if e["type"] == "response.output_audio_transcript.delta")
    audio = b"".join(base64.b64decode(e["delta"]) for e in seen if e["type"] == "response.output_audio.delta")
    assert transcript and done["response"]["output"][0]["content"][0] == {"type": "output_audio", "transcript": transcript}
    assert len(audio) > 2 * 2400 and len(audio) % 2 == 0  # over 0.1 s of pcm16 at 24 kHz
    assert kinds.index("response.output_audio.delta") > kinds.index("response.output_audio_transcript.delta")
    assert kinds.index("response.output_audio.done") < kinds.index("response.done")
    assert "response.output_text.delta" not in kinds


def test_heard_text_keeps_the_words_played():
    from unisono.modes.tts import heard_text

    text = "One two three four. Five six seven eight."
    spans = [("One two three four.", 0.0, 1000.0), ("Five six seven eight.", 1000.0, 2150.0)]
    assert heard_text(text, spans, 2150) == text
    assert heard_text(text, spans, 1000) == "One two three four."
    assert heard_text(text, spans, 500) == "One two"  # half of the first sentence's time, half its words
    assert heard_text(text, spans, 1000 + 1150 * 0.75) == "One two three four. Five six seven"
    assert heard_text(text, spans, 0) == ""
    # stopped while the second sentence was being spoken: it is timed at a natural pace (2.7 words/s)
    assert heard_text(text, spans[:1], 1000 + 1000 * 2 / 2.7 + 1) == "One two three four. Five six"
    assert heard_text("你好。今天天气很好。", [("你好。", 0.0, 600.0)], 600 + 1000 * 3 / 4.5 + 1) == "你好。 今天天"


def test_a_truncated_answer_leaves_only_what_was_heard_in_the_conversation(speaking_server):
    from unisono.model.unisono import Unisono

    seen: list = []
    url = speaking_server.v1.replace("http://", "ws://") + "/realtime?model=unisono-tiny"
    say = lambda words: {"type": "conversation.item.create", "item": {  # noqa: E731
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": words}]}}
    with connect(url, open_timeout=30) as ws:
        _until(ws, "session.created", seen)
        ws.send(json.dumps(say("Hi")))
        ws.send(json.dumps({"type": "response.create"}))
        first = _until(ws, "response.done", seen)["response"]["output"][0]
        audio = sum(len(base64.b64decode(e["delta"])) for e in seen if e["type"] == "response.output_audio.delta")
        played = audio // 48  # pcm16 at 24 kHz: 48 bytes a millisecond
        ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": first["id"], "content_index": 0,
                            "audio_end_ms": played + 500}))
        assert "beyond" in _until(ws, "error", seen)["error"]["message"]
        user_item = next(e["item"]["id"] for e in seen if e["type"] == "conversation.item.added"
                         and e["item"]["role"] == "user")
        ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": user_item, "audio_end_ms": 0}))
        assert _until(ws, "error", seen)["error"]["param"] == "item_id"
        ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": first["id"], "content_index": 0,
                            "audio_end_ms": 0}))  # the user spoke over it at once: nothing was heard
        truncated = _until(ws, "conversation.item.truncated", seen)
        assert (truncated["item_id"], truncated["audio_end_ms"]) == (first["id"], 0)
        ws.send(json.dumps(say("Go on")))
        ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
        second = _until(ws, "response.done", seen)["response"]["output"][0]["content"][0]["text"]
    # the next answer is built on a conversation without the unheard words
    expected = greedy_reply(Unisono.load(), [Turn("user", ["Hi"]), Turn("user", ["Go on"])], 24)[0]
    assert second == expected
