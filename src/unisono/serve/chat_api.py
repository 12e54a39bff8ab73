"""/v1/chat/completions: text and input_audio content in, the model's text reply out (streamed
as chat.completion.chunk events with stream=true)."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from unisono.audio.io import AudioError, encode_audio
from unisono.decode.sampling import SamplingConfig
from unisono.modes.asr import MAX_SEGMENT_S
from unisono.serve import sse
from unisono.serve.audio_api import check_model, finish, json_body
from unisono.serve.engine import PCM24, PCM_RATE, ChatTurn, Reply
from unisono.serve.errors import APIError
from unisono.serve.work import Stream

router = APIRouter()


def parse_messages(messages: Any, engine, max_audio_s: float) -> list[ChatTurn]:
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list", "messages")
    turns = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise APIError(400, f"{where} must be an object with role and content", where)
        role = {"developer": "system"}.get(m.get("role"), m.get("role"))
        if role not in ("system", "user", "assistant"):
            raise APIError(400, f"{where}.role must be system, developer, user or assistant, got {m.get('role')!r}",
                           f"{where}.role")
        content = m.get("content")
        if isinstance(content, str):
            turns.append(ChatTurn(role, [content]))
            continue
        if not isinstance(content, list):
            raise APIError(400, f"{where}.content must be a string or a list of content parts", f"{where}.content")
        parts: list = []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
                parts.append(_audio_part(part["input_audio"], at, engine, max_audio_s))
            else:
                raise APIError(400, f"{at} must be {{type: text, text}} or {{type: input_audio, input_audio: "
                               "{data, format}}}", at)
        turns.append(ChatTurn(role, parts))
    if turns[-1].role == "assistant":
        raise APIError(400, "the last message is the assistant's: there is nothing to reply to", "messages")
    return turns


def _audio_part(audio: dict, at: str, engine, max_audio_s: float):
    try:
        data = base64.b64decode(audio.get("data") or "", validate=True)
    except (ValueError, TypeError):
        raise APIError(400, f"{at}.input_audio.data is not base64", f"{at}.input_audio.data") from None
    if not data:
        raise APIError(400, f"{at}.input_audio.data is empty", f"{at}.input_audio.data")
    try:
        audio = engine.read_audio(data, max_audio_s)
    except AudioError as e:
        raise APIError(400, f"{at}.input_audio: {e}", f"{at}.input_audio") from None
    if len(audio) > MAX_SEGMENT_S * 16000:
        raise APIError(400, f"{at}.input_audio is {len(audio) / 16000:.1f} s long; a chat turn takes at most "
                       f"{MAX_SEGMENT_S:.0f} s of audio (transcribe longer audio instead)", f"{at}.input_audio")
    return audio


CHAT_AUDIO_FORMATS = ("wav", "flac", "pcm16")  # pcm16: 24 kHz, as OpenAI's


def _audio_request(body: dict, engine) -> dict | None:
    """The `audio` settings when the reply is to be spoken (modalities holds "audio"), else None."""
    modalities = body.get("modalities") or ["text"]
    if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"}:
        raise APIError(400, "modalities must be ['text'] or ['text', 'audio']", "modalities")
    if "audio" not in modalities:
        return None
    if not engine.can_speak:
        raise APIError(400, f"{engine.name} cannot speak: ask for modalities ['text']", "modalities",
                       "unsupported_modality")
    audio = body.get("audio") or {}
    if not isinstance(audio, dict):
        raise APIError(400, "audio must be an object {voice, format}", "audio")
    fmt = audio.get("format") or "wav"
    if fmt not in CHAT_AUDIO_FORMATS:
        raise APIError(400, f"audio.format must be one of {', '.join(CHAT_AUDIO_FORMATS)}, got {fmt!r}", "audio.format")
    if body.get("stream") and fmt != "pcm16":
        raise APIError(400, "a streamed spoken reply is pcm16: set audio.format to pcm16", "audio.format")
    return {"voice": audio.get("voice"), "format": fmt}


def _options(body: dict, max_tokens_limit: int) -> tuple[int, SamplingConfig]:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or min(256, max_tokens_limit)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= max_tokens_limit:
        raise APIError(400, f"max_tokens must be an integer in 1..{max_tokens_limit}, got {max_tokens!r}", "max_tokens")
    if body.get("n", 1) != 1:
        raise APIError(400, "n must be 1: one reply per request", "n")
    if body.get("stop"):
        raise APIError(400, "stop sequences are not supported: the reply ends at the model's end of turn", "stop")
    try:
        temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
        top_p = float(body.get("top_p") if body.get("top_p") is not None else 1.0)
        seed = body.get("seed")
        sampling = SamplingConfig(temperature=temperature, top_p=top_p, seed=int(seed) if seed is not None else None)
    except (TypeError, ValueError) as e:
        raise APIError(400, f"sampling settings: {e}", "temperature") from None
    if temperature > 2:
        raise APIError(400, f"temperature must be in [0, 2], got {temperature}", "temperature")
    return max_tokens, sampling


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    body = await json_body(request)
    check_model(request, body.get("model"))
    engine, config, metrics = request.app.state.engine, request.app.state.config, request.app.state.metrics
    max_tokens, sampling = _options(body, config.max_tokens)
    spoken = _audio_request(body, engine)
    speaker = None
    if spoken is not None:
        try:
            speaker = await asyncio.to_thread(engine.voice, spoken["voice"])
        except ValueError as e:
            raise APIError(400, str(e), "audio.voice", "voice_not_found") from None
    turns = await asyncio.to_thread(parse_messages, body.get("messages"), engine, config.max_audio_s)
    work = Stream().start(lambda emit: engine.reply(turns, max_tokens=max_tokens, sampling=sampling, emit=emit))
    reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": reply_id, "created": created, "model": engine.name}

    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def chunks():
            chunk = {**head, "object": "chat.completion.chunk"}
            yield sse.event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                   "finish_reason": None}]})
            audio_id = f"audio_{uuid.uuid4().hex[:24]}"
            try:
                async for delta in work:
                    part = {"audio": {"id": audio_id, "transcript": delta}} if spoken else {"content": delta}
                    yield sse.event({**chunk, "choices": [{"index": 0, "delta": part, "finish_reason": None}]})
                if spoken and work.result.text.strip():
                    async for pcm in _spoken(engine, work.result.text, speaker):
                        yield sse.event({**chunk, "choices": [{"index": 0, "delta": {"audio": {
                            "id": audio_id, "data": base64.b64encode(pcm).decode()}}, "finish_reason": None}]})
            except Exception as e:
                yield sse.event({"error": {"message": f"the reply failed: {e}", "type": "server_error"}})
                return
            r: Reply = work.result
            metrics.decoded("chat", r.stats)
            yield sse.event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": r.finish_reason}]})
            if include_usage:
                yield sse.event({**chunk, "choices": [], "usage": _usage(r)})
            yield sse.DONE
        return sse.response(chunks())

    r = await finish(request, work)
    metrics.decoded("chat", r.stats)
    message: dict = {"role": "assistant", "content": r.text}
    if spoken is not None:
        pcm = b"".join([chunk async for chunk in _spoken(engine, r.text, speaker)]) if r.text.strip() else b""
        samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32767
        data = pcm if spoken["format"] == "pcm16" else encode_audio(samples, PCM_RATE, spoken["format"])
        message = {"role": "assistant", "content": None, "audio": {
            "id": f"audio_{uuid.uuid4().hex[:24]}", "data": base64.b64encode(data).decode(),
            "expires_at": int(time.time()) + 3600, "transcript": r.text}}
    return JSONResponse({**head, "object": "chat.completion", "choices": [
        {"index": 0, "message": message, "finish_reason": r.finish_reason}], "usage": _usage(r)})


async def _spoken(engine, text: str, speaker):
    """`text` spoken by the engine, as pcm16 24 kHz byte chunks."""
    from unisono.modes.tts import TTSOptions

    pcm24 = PCM24()
    work = Stream().start(lambda emit: engine.speak(text, speaker, TTSOptions(), emit))
    async for chunk in work:
        yield pcm24(chunk)
    yield pcm24.flush()


def _usage(r: Reply) -> dict:
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens}
