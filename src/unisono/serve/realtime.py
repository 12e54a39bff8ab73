"""/v1/realtime: the OpenAI Realtime protocol over a WebSocket.

    client ─► session.update · input_audio_buffer.append / commit / clear · conversation.item.create
              / delete / truncate · response.create / cancel
    server ─► session.created (first) · session.updated · input_audio_buffer.speech_started /
              speech_stopped / committed / cleared · conversation.item.added + done (beta: created)
              · conversation.item.input_audio_transcription.delta / completed · conversation.item.truncated
              · response.created
              · response.output_item.added · response.content_part.added · response.output_text.delta
              (beta: response.text.delta) · the matching .done events · response.done · error

Audio is pcm16 (24 kHz, 16-bit little-endian mono, base64). With server VAD (silero-vad, per
connection) a pause of `silence_duration_ms` ends the user's turn: the buffer is committed,
transcribed, and answered; speech during an answer cancels it (barge-in). The answer does not wait
for that pause to be over: once the user has been quiet for half of it (at most EAGER_AFTER_MS),
the buffer is committed and answered with every event held back; the end of the turn releases
them (so the first audio can follow the end of the silence at once), and speech before it drops
them unseen and puts the audio back in the buffer. Event names follow the
GA protocol; a client that connects with `OpenAI-Beta: realtime=v1` gets the beta names, and
the beta session shape is understood either way.

A response is, until the realtime mode lands, the user's words as text (ASR) → the model's text
reply → that reply spoken (TTS) when the session answers in audio, all decoded by the engine's
scheduler beside every other request. A model without a speech codec answers in text only, and
asking it for audio is answered with an error event that says so. The realtime mode will
replace what a response does, not this protocol.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from fastapi import WebSocket, WebSocketDisconnect

from unisono.decode.sampling import SamplingConfig
from unisono.modes.asr import MAX_SEGMENT_S
from unisono.modes.tts import heard_text
from unisono.serve.engine import PCM24, ChatTurn, SentenceEnd
from unisono.serve.work import Stream

log = logging.getLogger("unisono.serve")

RATE = 24000  # pcm16 on the wire
MAX_APPEND_BYTES = 8 * 2**20  # decoded pcm16 in one append (~3 min); a frame over 16 MiB is refused by the socket (1009)
MIN_COMMIT_MS = 100  # a shorter buffer has nothing to transcribe
EAGER_AFTER_MS = 200  # quiet this long, the answer starts being prepared (unseen until the turn ends)

GA_NAMES = {  # GA name -> beta name, for what the server sends
    "conversation.item.added": "conversation.item.created",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class Held:
    """The events of an answer prepared before its turn has ended, kept from the client until
    the turn is confirmed (then sent in order) or the user speaks on (then dropped)."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.released = False


_HELD: contextvars.ContextVar[Held | None] = contextvars.ContextVar("unisono_realtime_held", default=None)


@dataclass
class EagerTurn:
    """A turn committed at the first pause, its transcript and answer under way in `task`; what
    the session was before it, to put back if the user goes on speaking."""

    task: asyncio.Task
    held: Held
    pcm: bytes
    buffer_start_ms: int
    n_items: int
    response_before: asyncio.Task | None


@dataclass
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True

    def to_dict(self) -> dict:
        return {"type": "server_vad", "threshold": self.threshold, "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms, "create_response": self.create_response,
                "interrupt_response": self.interrupt_response}


@dataclass
class SessionSettings:
    instructions: str = ""
    audio_out: bool = False  # answer in speech (with its transcript) rather than text
    voice: str = "lj"
    transcription: bool = True  # send the input audio's transcript events
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    max_output_tokens: int = 256
    temperature: float = 0.0

    def update(self, session: dict, can_speak: bool, max_tokens: int) -> None:
        """Apply a session.update's `session` (GA or beta shape); ValueError names a bad field."""
        if "instructions" in session:
            if not isinstance(session["instructions"], str):
                raise ValueError("session.instructions must be a string")
            self.instructions = session["instructions"]
        modalities = session.get("output_modalities", session.get("modalities"))
        if modalities is not None:
            if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"} or not modalities:
                raise ValueError("session.output_modalities must be ['text'] or ['audio']")
            if "audio" in modalities and not can_speak:
                raise ValueError("this model cannot speak: its realtime sessions answer in text "
                                 "(output_modalities ['text'])")
            self.audio_out = "audio" in modalities
        voice = ((session.get("audio") or {}).get("output") or {}).get("voice", session.get("voice"))
        if voice is not None:
            if not isinstance(voice, str) or not voice:
                raise ValueError("voice must be a voice name")
            self.voice = voice
        audio_in = (session.get("audio") or {}).get("input") or {}
        fmt = audio_in.get("format", session.get("input_audio_format"))
        if fmt is not None and fmt not in ("pcm16", {"type": "audio/pcm", "rate": RATE}) and not (
                isinstance(fmt, dict) and fmt.get("type") == "audio/pcm" and fmt.get("rate", RATE) == RATE):
            raise ValueError("the input audio format must be pcm16 at 24 kHz (audio/pcm, rate 24000)")
        transcription = audio_in.get("transcription", session.get("input_audio_transcription", ...))
        if transcription is not ...:
            self.transcription = transcription is not None
        detection = audio_in.get("turn_detection", session.get("turn_detection", ...))
        if detection is None:
            self.turn_detection = None
        elif detection is not ...:
            if not isinstance(detection, dict) or detection.get("type", "server_vad") != "server_vad":
                raise ValueError("turn_detection must be null or {type: server_vad, ...}")
            td = self.turn_detection or TurnDetection()
            try:
                self.turn_detection = TurnDetection(
                    threshold=float(detection.get("threshold", td.threshold)),
                    prefix_padding_ms=int(detection.get("prefix_padding_ms", td.prefix_padding_ms)),
                    silence_duration_ms=int(detection.get("silence_duration_ms", td.silence_duration_ms)),
                    create_response=bool(detection.get("create_response", td.create_response)),
                    interrupt_response=bool(detection.get("interrupt_response", td.interrupt_response)))
            except (TypeError, ValueError):
                raise ValueError("turn_detection: threshold is a number, the *_ms fields integers") from None
            if not 0 < self.turn_detection.threshold < 1 or not 0 <= self.turn_detection.silence_duration_ms <= 10000:
                raise ValueError("turn_detection: threshold in (0, 1), silence_duration_ms in 0..10000")
        limit = session.get("max_output_tokens", session.get("max_response_output_tokens"))
        if limit is not None:
            if limit == "inf":
                limit = max_tokens
            if not isinstance(limit, int) or not 1 <= limit <= max_tokens:
                raise ValueError(f"max_output_tokens must be an integer in 1..{max_tokens} or 'inf'")
            self.max_output_tokens = limit
        if "temperature" in session:
            t = session["temperature"]
            if not isinstance(t, (int, float)) or not 0 <= t <= 2:
                raise ValueError("temperature must be a number in [0, 2]")
            self.temperature = float(t)

    def to_dict(self, session_id: str, model: str, beta: bool) -> dict:
        detection = self.turn_detection.to_dict() if self.turn_detection else None
        transcription = {"model": model} if self.transcription else None
        if beta:
            return {"id": session_id, "object": "realtime.session", "model": model,
                    "modalities": ["text", "audio"] if self.audio_out else ["text"], "voice": self.voice,
                    "instructions": self.instructions, "input_audio_format": "pcm16", "output_audio_format": "pcm16",
                    "input_audio_transcription": transcription, "turn_detection": detection,
                    "temperature": self.temperature, "max_response_output_tokens": self.max_output_tokens}
        return {"type": "realtime", "object": "realtime.session", "id": session_id, "model": model,
                "output_modalities": ["audio"] if self.audio_out else ["text"], "instructions": self.instructions,
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE}, "transcription": transcription,
                                    "turn_detection": detection},
                          "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": self.voice}},
                "max_output_tokens": self.max_output_tokens}


class ProtocolError(Exception):
    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None):
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


class RealtimeConnection:
    """One client's session: its settings, audio buffer, conversation and current response."""

    def __init__(self, websocket: WebSocket, engine: Any, max_tokens: int, beta: bool, metrics: Any = None):
        self.ws, self.engine, self.beta, self.metrics = websocket, engine, beta, metrics
        self.max_tokens = max_tokens
        self.id = new_id("sess")
        self.settings = SessionSettings(max_output_tokens=min(256, max_tokens), audio_out=engine.can_speak)
        self.buffer = bytearray()  # pcm16 at 24 kHz since the last commit/clear
        self.buffer_start_ms = 0  # stream time of the buffer's first sample
        self.items: list[dict] = []  # the conversation
        self.response: asyncio.Task | None = None
        self.response_id: str | None = None
        self._stream: Stream | None = None
        self._vad = None
        self._speech_item: str | None = None  # the item id announced at speech_started
        self._eager: EagerTurn | None = None  # a turn being answered while the VAD waits out its silence
        self._spoken: dict | None = None  # the answer being spoken: audio ms so far, (sentence, start, end) spans
        self._speaker: tuple[str, Any] | None = None  # (voice name, its speaker embedding)
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._closed = False

    # ---- sending ------------------------------------------------------------------------------
    async def send(self, event_type: str, **fields: Any) -> None:
        name = GA_NAMES.get(event_type, event_type) if self.beta else event_type
        event = {"type": name, "event_id": new_id("event"), **fields}
        held = _HELD.get()
        if held is not None and not held.released:  # sent by an eager turn not yet confirmed
            held.events.append(event)
        else:
            self._outbox.put_nowait(event)

    async def error(self, message: str, code: str, param: str | None = None, event_id: str | None = None,
                    kind: str = "invalid_request_error") -> None:
        await self.send("error", error={"type": kind, "code": code, "message": message, "param": param,
                                        "event_id": event_id})

    async def _sender(self) -> None:
        while True:
            event = await self._outbox.get()
            if event is None:
                return
            await self.ws.send_text(json.dumps(event, ensure_ascii=False))

    # ---- the connection's life ----------------------------------------------------------------
    async def run(self) -> None:
        sender = asyncio.create_task(self._sender())
        try:
            await self.send("session.created", session=self._session())
            while True:
                try:
                    raw = await self.ws.receive_text()
                except (WebSocketDisconnect, RuntimeError):
                    return
                except KeyError:  # a binary frame
                    await self.error("send events as JSON text frames", "invalid_frame")
                    continue
                await self.handle(raw)
                if sender.done():  # the client is gone (a failed send)
                    return
        finally:
            self._closed = True
            await self._drop_eager()
            await self._cancel_response()
            await self._outbox.put(None)
            try:
                await asyncio.wait_for(sender, timeout=5)
            except (asyncio.TimeoutError, Exception):
                sender.cancel()

    async def handle(self, raw: str) -> None:
        try:
            event = json.loads(raw)
        except (ValueError, RecursionError):
            return await self.error("the event is not valid JSON", "invalid_json")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return await self.error("an event is a JSON object with a string 'type'", "invalid_event")
        handler = HANDLERS.get(event["type"])
        if handler is None:
            return await self.error(f"unknown event type {event['type']!r}", "unknown_event_type", "type",
                                    event.get("event_id"))
        try:
            await handler(self, event)
        except ProtocolError as e:
            await self.error(e.message, e.code, e.param, event.get("event_id"))
        except Exception:
            log.exception("realtime event %s failed", event["type"])
            await self.error("the server failed to handle this event (its log has the details)", "server_error",
                             event_id=event.get("event_id"), kind="server_error")

    def _session(self) -> dict:
        return self.settings.to_dict(self.id, self.engine.name, self.beta)

    # ---- client events --------------------------------------------------------------------------
    async def on_session_update(self, event: dict) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            raise ProtocolError("session.update needs a 'session' object", param="session")
        try:
            self.settings.update(session, self.engine.can_speak, self.max_tokens)
        except ValueError as e:
            raise ProtocolError(str(e), "invalid_value", "session") from None
        if self.settings.turn_detection is None:
            await self._drop_eager()
            self._vad = None
        await self.send("session.updated", session=self._session())

    async def on_append(self, event: dict) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError("input_audio_buffer.append needs 'audio': base64 pcm16", param="audio")
        if len(audio) > MAX_APPEND_BYTES * 4 // 3 + 4:
            raise ProtocolError(f"one append carries at most {MAX_APPEND_BYTES // 2**20} MB of audio", "audio_too_large",
                                "audio")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("'audio' is not base64", "invalid_audio", "audio") from None
        if len(pcm) % 2:
            raise ProtocolError("pcm16 audio has an even number of bytes", "invalid_audio", "audio")
        if len(self.buffer) + len(pcm) > 2 * RATE * 60 * 10:
            raise ProtocolError("the input buffer holds at most 10 minutes: commit or clear it", "buffer_full", "audio")
        self.buffer += pcm
        if self.settings.turn_detection is not None:
            await self._detect(pcm)

    async def _detect(self, pcm: bytes) -> None:
        td = self.settings.turn_detection
        if self._vad is None:
            from unisono.audio.vad import StreamingVAD

            pause_ms = min(EAGER_AFTER_MS, td.silence_duration_ms // 2) if td.create_response else None
            self._vad = await asyncio.to_thread(StreamingVAD, td.threshold, td.silence_duration_ms, pause_ms=pause_ms)
            self._vad_origin_ms = self.buffer_start_ms + (len(self.buffer) - len(pcm)) * 1000 // (2 * RATE)
        samples = soxr.resample(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, RATE, 16000)
        for change, sample in await asyncio.to_thread(self._vad.feed, samples):
            at_ms = self._vad_origin_ms + sample * 1000 // 16000
            if change == "start":
                self._speech_item = new_id("item")
                await self.send("input_audio_buffer.speech_started", audio_start_ms=at_ms, item_id=self._speech_item)
                if td.interrupt_response and self.response is not None and not self.response.done():
                    await self._cancel_response()  # barge-in: the user speaks over the answer
            elif change == "pause":
                self._start_eager()
            elif change == "resume":
                await self._drop_eager()
            else:
                await self.send("input_audio_buffer.speech_stopped", audio_end_ms=at_ms, item_id=self._speech_item)
                if self._eager is not None:
                    self._confirm_eager()
                else:
                    await self._commit(self._speech_item, create_response=td.create_response)

    # ---- eager turns: the answer is prepared during the silence that ends the turn ----------------
    def _start_eager(self) -> None:
        """The user paused: commit what they said and start answering, every event held back."""
        busy = self.response is not None and not self.response.done()
        if self._eager is not None or busy or len(self.buffer) < 2 * RATE * MIN_COMMIT_MS // 1000:
            return
        held, start_ms, n_items = Held(), self.buffer_start_ms, len(self.items)
        pcm = self._take_buffer()
        context = contextvars.copy_context()
        context.run(_HELD.set, held)  # this task, and the response task it starts, send into `held`
        task = asyncio.create_task(self._commit_pcm(self._speech_item, pcm, create_response=True), context=context)
        self._eager = EagerTurn(task, held, pcm, start_ms, n_items, self.response)

    def _confirm_eager(self) -> None:
        """The silence ended the turn: send what the eager turn has done so far, and the rest as it
        comes. The audio since the pause was silence; it is dropped with the turn."""
        eager, self._eager = self._eager, None
        for event in eager.held.events:
            self._outbox.put_nowait(event)
        eager.held.released = True  # no await since the flush: nothing can come between
        self._take_buffer()
        if self.metrics is not None:
            self.metrics.eager_turns.labels("confirmed").inc()

    async def _drop_eager(self) -> None:
        """The user went on speaking (or the buffer was cleared): undo the eager turn, unseen."""
        eager, self._eager = self._eager, None
        if eager is None:
            return
        eager.task.cancel()
        await asyncio.gather(eager.task, return_exceptions=True)
        if self.response is not eager.response_before:
            await self._cancel_response()
            self.response = eager.response_before
        del self.items[eager.n_items:]
        self.buffer[:0] = eager.pcm
        self.buffer_start_ms = eager.buffer_start_ms
        if self.metrics is not None:
            self.metrics.eager_turns.labels("dropped").inc()

    async def on_commit(self, event: dict) -> None:
        await self._drop_eager()  # a client's commit takes the whole buffer, the eagerly committed audio too
        if len(self.buffer) < 2 * RATE * MIN_COMMIT_MS // 1000:
            raise ProtocolError(f"the input buffer holds {len(self.buffer) * 1000 // (2 * RATE)} ms of audio; a commit "
                                f"needs at least {MIN_COMMIT_MS} ms", "input_audio_buffer_commit_empty")
        await self._commit(new_id("item"), create_response=False)

    async def on_clear(self, event: dict) -> None:
        await self._drop_eager()
        self.buffer_start_ms += len(self.buffer) * 1000 // (2 * RATE)
        self.buffer.clear()
        if self._vad is not None:
            self._vad.reset()
            self._vad = None
        await self.send("input_audio_buffer.cleared")

    def _take_buffer(self) -> bytes:
        pcm = bytes(self.buffer)
        self.buffer_start_ms += len(pcm) * 1000 // (2 * RATE)
        self.buffer.clear()
        return pcm

    async def _commit(self, item_id: str, create_response: bool) -> None:
        await self._commit_pcm(item_id, self._take_buffer(), create_response)

    async def _commit_pcm(self, item_id: str, pcm: bytes, create_response: bool) -> None:
        previous = self.items[-1]["id"] if self.items else None
        await self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        item = {"id": item_id, "type": "message", "role": "user", "status": "completed", "object": "realtime.item",
                "content": [{"type": "input_audio", "transcript": None}]}
        self.items.append(item)
        await self._item_added(item, previous)
        audio = soxr.resample(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, RATE, 16000)
        item["_audio"] = audio
        if create_response and len(audio) <= MAX_SEGMENT_S * 16000:
            # the answer hears the audio itself: it need not wait for the transcript, which is
            # decoded beside it (its events may come after response.created, as OpenAI's do)
            transcribing = asyncio.create_task(self._transcribe(item_id, audio))
            if not self._closed:
                await self._start_response({})
            item["content"][0]["transcript"] = await transcribing
            return
        item["content"][0]["transcript"] = await self._transcribe(item_id, audio)
        if create_response and not self._closed:
            await self._start_response({})

    async def _transcribe(self, item_id: str, audio: np.ndarray) -> str:
        deltas: list[str] = []
        work = Stream().start(lambda emit: self.engine.transcribe(audio, on_delta=emit))
        try:
            async for delta in work:
                deltas.append(delta)
                if self.settings.transcription:
                    await self.send("conversation.item.input_audio_transcription.delta", item_id=item_id,
                                    content_index=0, delta=delta)
        except Exception as e:
            await self.send("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                            error={"type": "transcription_error", "code": "transcription_failed", "message": str(e)})
            return ""
        text = work.result.text
        if self.settings.transcription:
            await self.send("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                            transcript=text)
        return text

    async def _item_added(self, item: dict, previous: str | None) -> None:
        public = {k: v for k, v in item.items() if not k.startswith("_")}
        await self.send("conversation.item.added", previous_item_id=previous, item=public)
        if not self.beta:
            await self.send("conversation.item.done", previous_item_id=previous, item=public)

    async def on_item_create(self, event: dict) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            raise ProtocolError("conversation.item.create takes a message item (role and content)", param="item")
        role = item.get("role")
        if role not in ("user", "assistant", "system"):
            raise ProtocolError("item.role must be user, assistant or system", param="item.role")
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise ProtocolError("item.content must be a non-empty list", param="item.content")
        stored = {"id": item.get("id") or new_id("item"), "type": "message", "role": role, "status": "completed",
                  "object": "realtime.item", "content": []}
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "text", "output_text") and isinstance(part.get("text"), str):
                stored["content"].append({"type": kind, "text": part["text"]})
            elif kind == "input_audio" and isinstance(part.get("audio"), str):
                try:
                    pcm = base64.b64decode(part["audio"], validate=True)
                except (binascii.Error, ValueError):
                    raise ProtocolError("input_audio.audio is not base64", "invalid_audio", "item.content") from None
                stored["content"].append({"type": "input_audio", "transcript": None})
                stored["_audio"] = soxr.resample(np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float32)
                                                 / 32768, RATE, 16000)
            else:
                raise ProtocolError(f"unsupported content part {kind!r}: input_text or input_audio",
                                    param="item.content")
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(stored)
        await self._item_added(stored, previous)
        if "_audio" in stored:
            transcript = await self._transcribe(stored["id"], stored["_audio"])
            next(p for p in stored["content"] if p["type"] == "input_audio")["transcript"] = transcript

    async def on_item_delete(self, event: dict) -> None:
        item_id = event.get("item_id")
        found = [i for i in self.items if i["id"] == item_id]
        if not found:
            raise ProtocolError(f"no item {item_id!r} in the conversation", "item_not_found", "item_id")
        self.items.remove(found[0])
        await self.send("conversation.item.deleted", item_id=item_id)

    async def on_item_truncate(self, event: dict) -> None:
        """The client played only `audio_end_ms` of an answer (the user spoke over it): the item keeps
        the words that were heard, so the next answer does not build on words never said."""
        item_id, end_ms = event.get("item_id"), event.get("audio_end_ms")
        found = [i for i in self.items if i["id"] == item_id]
        if not found:
            raise ProtocolError(f"no item {item_id!r} in the conversation", "item_not_found", "item_id")
        item = found[0]
        if item["role"] != "assistant" or "_spoken" not in item:
            raise ProtocolError("only a spoken assistant item can be truncated", "invalid_value", "item_id")
        if event.get("content_index", 0) != 0:
            raise ProtocolError("an answer has one content part: content_index 0", "invalid_value", "content_index")
        if not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0:
            raise ProtocolError("audio_end_ms must be a whole number of milliseconds >= 0", "invalid_value",
                                "audio_end_ms")
        spoken = item["_spoken"]
        if end_ms > spoken["ms"] + 1:
            raise ProtocolError(f"audio_end_ms {end_ms} is beyond the {spoken['ms']:.0f} ms of audio the answer has",
                                "invalid_value", "audio_end_ms")
        part = item["content"][0]
        part["transcript"] = heard_text(part["transcript"], spoken["spans"], end_ms)
        spoken["ms"] = float(end_ms)
        await self.send("conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=end_ms)

    async def on_response_create(self, event: dict) -> None:
        if self.response is not None and not self.response.done():
            raise ProtocolError("a response is in progress: cancel it first (response.cancel)",
                                "conversation_already_has_active_response")
        options = event.get("response") or {}
        if not isinstance(options, dict):
            raise ProtocolError("response must be an object", param="response")
        modalities = options.get("output_modalities", options.get("modalities"))
        if modalities and "audio" in modalities and not self.engine.can_speak:
            raise ProtocolError("this model cannot speak: ask for output_modalities ['text']",
                                "unsupported_modality", "response.output_modalities")
        if modalities is not None and (not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"}):
            raise ProtocolError("response.output_modalities must be ['text'] or ['audio']", "invalid_value",
                                "response.output_modalities")
        await self._start_response(options)

    async def on_response_cancel(self, event: dict) -> None:
        if self.response is None or self.response.done():
            raise ProtocolError("there is no response in progress to cancel", "response_cancel_not_active")
        await self._cancel_response()

    # ---- responses ------------------------------------------------------------------------------
    async def _start_response(self, options: dict) -> None:
        if self.response is not None and not self.response.done():
            await self._cancel_response()
        self.response_id = new_id("resp")
        self.response = asyncio.create_task(self._respond(self.response_id, options))

    async def _cancel_response(self) -> None:
        task = self.response
        if task is None or task.done():
            return
        if self._stream is not None:
            self._stream.stop()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    def _turns(self, instructions: str) -> list[ChatTurn]:
        """The prompt of a response, as `modes.chat` builds it: earlier turns as their words, the
        user's last turn as its audio when it was spoken (and fits a chat turn)."""
        turns = [ChatTurn("system", [instructions])] if instructions else []
        for index, item in enumerate(self.items):
            spoken = item.get("_audio")
            if (index == len(self.items) - 1 and item["role"] == "user" and spoken is not None
                    and 0 < len(spoken) <= MAX_SEGMENT_S * 16000):
                turns.append(ChatTurn("user", [spoken]))
                continue
            words = " ".join(p.get("text") or p.get("transcript") or "" for p in item["content"]).strip()
            if words:
                turns.append(ChatTurn(item["role"], [words]))
        return turns

    async def _respond(self, response_id: str, options: dict) -> None:
        instructions = options.get("instructions", self.settings.instructions)
        modalities = options.get("output_modalities", options.get("modalities"))
        audio_out = self.settings.audio_out if modalities is None else "audio" in modalities
        item_id = new_id("item")
        if audio_out:
            kind, delta_event, done_event = ("audio" if self.beta else "output_audio",
                                             "response.output_audio_transcript.delta", "response.output_audio_transcript.done")
        else:
            kind, delta_event, done_event = ("text" if self.beta else "output_text",
                                             "response.output_text.delta", "response.output_text.done")
        field_name = "transcript" if audio_out else "text"
        response = {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": [],
                    "output_modalities": ["audio"] if audio_out else ["text"], "usage": None}
        await self.send("response.created", response=dict(response))
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress",
                "object": "realtime.item", "content": []}
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        text, status, usage, spoken = "", "completed", None, False
        self._spoken = None
        try:
            await self.send("response.output_item.added", response_id=response_id, output_index=0, item=dict(item))
            previous = self.items[-1]["id"] if self.items else None
            await self.send("conversation.item.added", previous_item_id=previous, item=dict(item))
            await self.send("response.content_part.added", **{k: v for k, v in where.items()},
                            part={"type": kind, field_name: ""})
            turns = self._turns(instructions)
            if not turns or turns[-1].role == "assistant":
                turns.append(ChatTurn("user", [""]))
            sampling = SamplingConfig(temperature=self.settings.temperature)
            self._stream = Stream().start(lambda emit: self.engine.reply(
                turns, max_tokens=self.settings.max_output_tokens, sampling=sampling, emit=emit))
            async for delta in self._stream:
                text += delta
                await self.send(delta_event, **where, delta=delta)
            reply = self._stream.result
            usage = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens,
                     "total_tokens": reply.prompt_tokens + reply.completion_tokens}
            status = "incomplete" if reply.finish_reason == "length" else "completed"
            if audio_out and text.strip():
                await self._say(text, where)
                spoken = True
        except asyncio.CancelledError:
            status = "cancelled"
        except Exception as e:
            log.exception("realtime response failed")
            status = "failed"
            await self.error(f"the response failed: {e}", "response_failed", kind="server_error")
        finally:
            self._stream = None
        item = {**item, "status": "completed" if status == "completed" else "incomplete",
                "content": [{"type": kind, field_name: text}]}
        if self._spoken is not None:  # what was said when: a client's truncate keeps the words heard
            item["_spoken"], self._spoken = self._spoken, None
        self.items.append(item)
        if status != "cancelled":
            if spoken:
                await self.send("response.output_audio.done", **where)
            await self.send(done_event, **where, **{field_name: text})
        await self.send("response.content_part.done", **where, part={"type": kind, field_name: text})
        await self.send("response.output_item.done", response_id=response_id, output_index=0, item=item)
        if not self.beta:
            await self.send("conversation.item.done", previous_item_id=None, item=item)
        await self.send("response.done", response={**response, "status": status, "output": [item], "usage": usage})

    async def _say(self, text: str, where: dict) -> None:
        """The reply spoken through the same backbone, as pcm16 24 kHz audio deltas."""
        from unisono.modes.tts import TTSOptions

        if self._speaker is None or self._speaker[0] != self.settings.voice:
            try:
                self._speaker = (self.settings.voice, await asyncio.to_thread(self.engine.voice, self.settings.voice))
            except ValueError as e:
                raise ProtocolError(str(e), "voice_not_found", "session.voice") from None
        pcm24 = PCM24()
        speaker = self._speaker[1]
        self._spoken = spoken = {"ms": 0.0, "spans": []}
        self._stream = Stream().start(lambda emit: self.engine.speak(text, speaker, TTSOptions(), emit, sentences=True))
        async for chunk in self._stream:
            if isinstance(chunk, SentenceEnd):
                start = spoken["spans"][-1][2] if spoken["spans"] else 0.0
                spoken["spans"].append((chunk.text, start, spoken["ms"]))
                continue
            spoken["ms"] += len(chunk) * 1000 / 16000
            await self._audio_delta(pcm24(chunk), where)
        await self._audio_delta(pcm24.flush(), where)

    async def _audio_delta(self, pcm: bytes, where: dict) -> None:
        if pcm:
            await self.send("response.output_audio.delta", **where, delta=base64.b64encode(pcm).decode())


HANDLERS = {
    "session.update": RealtimeConnection.on_session_update,
    "transcription_session.update": RealtimeConnection.on_session_update,
    "input_audio_buffer.append": RealtimeConnection.on_append,
    "input_audio_buffer.commit": RealtimeConnection.on_commit,
    "input_audio_buffer.clear": RealtimeConnection.on_clear,
    "conversation.item.create": RealtimeConnection.on_item_create,
    "conversation.item.delete": RealtimeConnection.on_item_delete,
    "conversation.item.truncate": RealtimeConnection.on_item_truncate,
    "response.create": RealtimeConnection.on_response_create,
    "response.cancel": RealtimeConnection.on_response_cancel,
}

KEY_PROTOCOL = "openai-insecure-api-key."  # browsers cannot set headers: the key rides as a subprotocol


async def serve_realtime(websocket: WebSocket, engine: Any, config: Any, gate: Any, metrics: Any = None) -> None:
    """Authenticate (header or subprotocol), hold one of the key's slots, run the session."""
    offered = list(websocket.scope.get("subprotocols") or [])
    authorization = websocket.headers.get("authorization")
    for protocol in offered:
        if protocol.startswith(KEY_PROTOCOL):
            authorization = "Bearer " + protocol[len(KEY_PROTOCOL):]
    key = gate.identify(authorization)
    if key is None:
        await _refuse(websocket, 401, "a valid API key is required (Authorization: Bearer KEY)", 1008)
        return
    model = websocket.query_params.get("model")
    if not gate.acquire(key):
        await _refuse(websocket, 429, f"too many requests at once: at most {gate.limit} per API key", 1013)
        return
    try:
        await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
        beta = websocket.headers.get("openai-beta", "").startswith("realtime=v1")
        connection = RealtimeConnection(websocket, engine, config.max_tokens, beta, metrics)
        if model not in (None, "", engine.name):
            await websocket.send_text(json.dumps({"type": "error", "event_id": new_id("event"), "error": {
                "type": "invalid_request_error", "code": "model_not_found", "param": "model", "event_id": None,
                "message": f"the model {model!r} does not exist: this server serves {engine.name!r}"}}))
            await websocket.close(code=1008)
            return
        await connection.run()
    finally:
        gate.release(key)


async def _refuse(websocket: WebSocket, status: int, message: str, close_code: int) -> None:
    """Refuse the handshake with an HTTP status and an OpenAI error body where the server can send
    one (the WebSocket denial response), else by closing it."""
    from unisono.serve.errors import error_response

    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(status, message))
    else:
        await websocket.close(code=close_code, reason=message[:120])
