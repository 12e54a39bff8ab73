"""The OpenAI-compatible server: one model, every request through its engine.

    GET  /                          a web page: talk (microphone), transcribe a file, speak
    GET  /health, /metrics, /v1/models
    POST /v1/audio/transcriptions   (json, text, srt, vtt, verbose_json; stream=true: SSE deltas)
    POST /v1/audio/translations     (400 unless the model translates)
    POST /v1/audio/speech           (named voices; wav and pcm streamed, flac, ogg; stream_format sse)
    POST /v1/chat/completions       (text and input_audio in, text or speech out; stream=true: SSE chunks)
    WS   /v1/realtime               (the OpenAI Realtime protocol, server VAD, barge-in)
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response

from unisono.serve import audio_api, chat_api
from unisono.serve.config import ServerConfig
from unisono.serve.engine import Engine
from unisono.serve.errors import install_handlers
from unisono.serve.guard import Gate, Guard
from unisono.serve.metrics import Metrics
from unisono.serve.realtime import serve_realtime


def create_app(engine: Engine, config: ServerConfig | None = None, close_engine: bool = True) -> FastAPI:
    config = config or ServerConfig()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        trimmer = asyncio.create_task(_return_memory_when_idle(engine))
        yield
        trimmer.cancel()
        if close_engine:
            engine.close()

    app = FastAPI(title="unisono", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine, app.state.config = engine, config
    app.state.metrics = Metrics(lambda: engine.active_sessions)
    app.state.gate = Gate(config)
    install_handlers(app)
    app.include_router(audio_api.router)
    app.include_router(chat_api.router)

    page = (Path(__file__).parent / "static" / "index.html").read_bytes()

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": engine.name, "capabilities": _capabilities(engine),
                "active_sessions": engine.active_sessions}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(app.state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(engine, created)]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> JSONResponse:
        audio_api.check_model(request, model_id)
        return JSONResponse(_model_card(engine, created))

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        await serve_realtime(websocket, engine, config, app.state.gate, app.state.metrics)

    app.add_middleware(Guard, config=config, gate=app.state.gate, metrics=app.state.metrics)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    return app


async def _return_memory_when_idle(engine: Engine, every_s: float = 5.0) -> None:
    """Hand freed memory back to the system whenever no request is decoding. Batches of many
    requests leave the C allocator holding the peak's pages, spread over threads' arenas;
    without this the server's resident memory climbed with each busier moment and never fell.
    glibc only (malloc_trim); elsewhere nothing to do."""
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    while True:
        await asyncio.sleep(every_s)
        if engine.active_sessions == 0:
            trim(0)


def _capabilities(engine: Engine) -> list[str]:
    return [name for name, able in (("transcription", engine.can_transcribe), ("chat", True), ("realtime", True),
                                    ("speech", engine.can_speak), ("translation", engine.can_translate)) if able]


def _model_card(engine: Engine, created: int) -> dict:
    return {"id": engine.name, "object": "model", "created": created, "owned_by": "unisono",
            "capabilities": _capabilities(engine)}
