"""/v1/audio: transcriptions, translations and speech, in the OpenAI shape."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from unisono.audio.io import AudioError, AudioTooLongError
from unisono.modes.asr import Transcript, to_srt, to_vtt
from unisono.serve import sse
from unisono.serve.errors import APIError
from unisono.serve.work import Stream

router = APIRouter()

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
LANGUAGES = {"en": "english", "zh": "chinese"}


async def json_body(request: Request) -> dict:
    """The request's JSON object (400 for anything else)."""
    try:
        body = await request.json()
    except ValueError:
        raise APIError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object")
    return body


def check_model(request: Request, model: str | None) -> None:
    served = request.app.state.engine.name
    if model is not None and model != served:
        raise APIError(404, f"the model {model!r} does not exist: this server serves {served!r}", "model", "model_not_found")


def _language(language: str | None) -> str | None:
    if language in (None, ""):
        return None
    code = language.strip().lower()
    code = {"english": "en", "chinese": "zh", "mandarin": "zh"}.get(code, code)
    if code not in LANGUAGES:
        raise APIError(400, f"language {language!r} is not supported: give en or zh (or none, and the model decides)",
                       "language", "unsupported_language")
    return code


async def read_upload(request: Request, file: UploadFile):
    """The upload's samples, read and checked in a worker thread."""
    engine, config = request.app.state.engine, request.app.state.config
    data = await file.read()
    if not data:
        raise APIError(400, f"{file.filename or 'the file'} is empty (0 bytes)", "file", "empty_file")
    try:
        audio = await asyncio.to_thread(engine.read_audio, data, config.max_audio_s)
    except AudioTooLongError as e:
        raise APIError(413, str(e), "file", "audio_too_long") from None
    except AudioError as e:  # name the upload, not the in-memory bytes it was read from
        raise APIError(400, str(e).replace("<bytes>", file.filename or "the file", 1), "file", "invalid_audio") from None
    request.app.state.metrics.audio_seconds.inc(len(audio) / 16000)
    return audio


async def finish(request: Request, stream: Stream) -> Any:
    """The work's result; the work is stopped if the client disconnects first."""
    task = asyncio.ensure_future(stream.wait())
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            stream.stop()
            task.cancel()
            raise APIError(499, "the client closed the connection", code="client_closed")


def _compression_ratio(text: str) -> float:  # Whisper's repetition check: zlib ratio of the text's bytes
    data = text.encode()
    return round(len(data) / len(zlib.compress(data)), 3) if data else 0.0


def _detected_language(text: str, asked: str | None) -> str:
    if asked:
        return LANGUAGES[asked]
    han = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return "chinese" if han and han >= len(text.replace(" ", "")) / 3 else "english"


def verbose(t: Transcript, language: str | None, temperature: float) -> dict:
    return {
        "task": "transcribe",
        "language": _detected_language(t.text, language),
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [{"id": i, "seek": int(s.start * 100), "start": s.start, "end": s.end, "text": s.text,
                      "temperature": temperature, "compression_ratio": _compression_ratio(s.text)}
                     for i, s in enumerate(t.segments)],
        "usage": {"type": "duration", "seconds": round(t.duration, 3)},
    }


@router.post("/v1/audio/transcriptions")
async def transcriptions(
    request: Request,
    file: UploadFile = File(...),
    model: str = Form(...),
    language: str | None = Form(None),
    prompt: str | None = Form(None),
    response_format: str = Form("json"),
    temperature: float = Form(0.0),
    stream: bool = Form(False),
    timestamp_granularities: list[str] | None = Form(None, alias="timestamp_granularities[]"),
) -> Response:
    check_model(request, model)
    if response_format not in RESPONSE_FORMATS:
        raise APIError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}",
                       "response_format")
    if not 0.0 <= temperature <= 1.0:
        raise APIError(400, f"temperature must be between 0 and 1, got {temperature}", "temperature")
    if prompt and prompt.strip():
        raise APIError(400, "this model takes no text prompt for transcription: send the request without one",
                       "prompt", "unsupported_parameter")
    if timestamp_granularities and set(timestamp_granularities) - {"segment"}:
        raise APIError(400, "only segment timestamps are available (timestamp_granularities: ['segment'])",
                       "timestamp_granularities", "unsupported_parameter")
    if stream and response_format not in ("json", "text"):
        raise APIError(400, "stream=true sends transcript events; use it with response_format json or text",
                       "stream")
    code = _language(language)
    audio = await read_upload(request, file)
    engine, metrics = request.app.state.engine, request.app.state.metrics
    work = Stream().start(lambda emit: engine.transcribe(audio, language=code, temperature=temperature, on_delta=emit))

    if stream:
        async def events():
            try:
                async for delta in work:
                    yield sse.event({"type": "transcript.text.delta", "delta": delta})
            except Exception as e:  # the stream has started: the error travels as an event
                yield sse.event({"error": {"message": f"transcription failed: {e}", "type": "server_error"}})
                return
            t: Transcript = work.result
            metrics.decoded("transcriptions", t.stats)
            yield sse.event({"type": "transcript.text.done", "text": t.text,
                             "usage": {"type": "duration", "seconds": round(t.duration, 3)}})
        return sse.response(events())

    t = await finish(request, work)
    metrics.decoded("transcriptions", t.stats)
    if response_format == "text":
        return PlainTextResponse(t.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(t))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(t), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse(verbose(t, code, temperature))
    return JSONResponse({"text": t.text, "usage": {"type": "duration", "seconds": round(t.duration, 3)}})


@router.post("/v1/audio/translations")
async def translations(request: Request, file: UploadFile = File(...), model: str = Form(...)) -> Response:
    check_model(request, model)
    if not request.app.state.engine.can_translate:
        raise APIError(400, f"{request.app.state.engine.name} cannot translate speech: it has no speech-to-English "
                       "translation task (use /v1/audio/transcriptions)", "model", "unsupported_task")
    raise APIError(400, "translation is not available", "model", "unsupported_task")


SPEECH_FORMATS = ("wav", "pcm", "flac", "ogg")  # pcm: 16-bit mono at 24 kHz, as OpenAI's; wav streams at 16 kHz


def _wav_stream_header(rate: int) -> bytes:
    """A WAV header for a stream of unknown length (sizes at their maximum, as OpenAI's streams do)."""
    import struct

    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


@router.post("/v1/audio/speech")
async def speech(request: Request) -> Response:
    import base64

    import numpy as np

    from unisono.audio.io import encode_audio
    from unisono.modes.tts import TTSOptions
    from unisono.serve.engine import PCM24

    body = await json_body(request)
    check_model(request, body.get("model"))
    engine, metrics = request.app.state.engine, request.app.state.metrics
    if not engine.can_speak:
        raise APIError(400, f"{engine.name} cannot speak: it has no TTS mode", "model", "unsupported_task")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise APIError(400, "input must be non-empty text", "input")
    if len(text) > 4096:
        raise APIError(400, f"input is {len(text)} characters; at most 4096", "input")
    fmt = body.get("response_format") or "wav"
    if fmt not in SPEECH_FORMATS:
        raise APIError(400, f"response_format must be one of {', '.join(SPEECH_FORMATS)}, got {fmt!r}", "response_format")
    stream_format = body.get("stream_format") or "audio"
    if stream_format not in ("audio", "sse"):
        raise APIError(400, "stream_format must be audio or sse", "stream_format")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise APIError(400, f"seed must be an integer, got {seed!r}", "seed")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise APIError(400, "instructions must be text", "instructions")
    try:
        options = TTSOptions(instruct=instructions, speed=float(body.get("speed") or 1.0), seed=seed)
    except (TypeError, ValueError) as e:
        raise APIError(400, str(e), "speed") from None
    voice = body.get("voice") or None
    if isinstance(voice, dict):
        voice = voice.get("id")
    if voice is not None and not isinstance(voice, str):
        raise APIError(400, "voice must be a voice name", "voice")
    try:
        speaker = await asyncio.to_thread(engine.voice, voice)
    except ValueError as e:
        raise APIError(400, str(e), "voice", "voice_not_found") from None
    work = Stream().start(lambda emit: engine.speak(text, speaker, options, emit))
    pcm24 = PCM24()

    if stream_format == "sse":
        async def events():
            try:
                async for chunk in work:
                    yield sse.event({"type": "speech.audio.delta", "audio": base64.b64encode(pcm24(chunk)).decode()})
                yield sse.event({"type": "speech.audio.delta", "audio": base64.b64encode(pcm24.flush()).decode()})
            except Exception as e:
                yield sse.event({"error": {"message": f"speech failed: {e}", "type": "server_error"}})
                return
            metrics.decoded("speech", work.result.stats)
            yield sse.event({"type": "speech.audio.done", "usage": {"input_tokens": len(text), "output_tokens":
                             sum(len(t) for t in work.result.tokens), "total_tokens": len(text) + sum(len(t) for t in work.result.tokens)}})
        return sse.response(events())

    if fmt in ("pcm", "wav"):
        async def audio_bytes():
            if fmt == "wav":
                yield _wav_stream_header(16000)
            async for chunk in work:
                yield pcm24(chunk) if fmt == "pcm" else encode_audio(chunk, 16000, "pcm")
            if fmt == "pcm":
                yield pcm24.flush()
            metrics.decoded("speech", work.result.stats)
        return StreamingResponse(audio_bytes(), media_type="audio/pcm" if fmt == "pcm" else "audio/wav")

    chunks = []
    async for chunk in work:
        chunks.append(chunk)
    metrics.decoded("speech", work.result.stats)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return Response(encode_audio(audio, 16000, fmt), media_type=f"audio/{fmt}")
