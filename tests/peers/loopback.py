"""A real OpenAI-compatible HTTP server on 127.0.0.1, started in the test: FastAPI under uvicorn.

It answers POST /v1/audio/transcriptions (multipart, as OpenAI's API) and /v1/chat/completions
(JSON) with what the test's `transcribe` / `chat` functions return, or with `fail` (a status and a
body) when set; every request is kept in `requests` for the test to inspect.

    with openai_server(transcribe=lambda audio, fields: "hello") as server:
        build_recognizer(f"openai:{server.url}").transcribe(audio)
"""

from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import soundfile as sf
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response


@dataclass
class LoopbackServer:
    transcribe: Callable[[np.ndarray, dict[str, str]], str] | None = None  # (audio, form fields) -> text
    chat: Callable[[dict[str, Any]], str] | None = None  # request body -> the reply's content
    fail: tuple[int, str] | None = None  # answer every request with this status and body instead
    raw: Any = None  # answer every request with this JSON (or text, if a str) instead, status 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""  # the API base, "http://127.0.0.1:PORT/v1", once started


def _app(server: LoopbackServer):
    app = FastAPI()

    def canned() -> Response | None:
        if server.fail is not None:
            return PlainTextResponse(server.fail[1], status_code=server.fail[0])
        if server.raw is not None:
            return PlainTextResponse(server.raw) if isinstance(server.raw, str) else JSONResponse(server.raw)
        return None

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        form = await request.form()
        upload = form["file"]
        audio, rate = sf.read(io.BytesIO(await upload.read()), dtype="float32")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        server.requests.append({"path": request.url.path, "auth": request.headers.get("authorization"),
                                "fields": fields, "filename": upload.filename, "audio": audio, "rate": rate})
        return canned() or {"text": server.transcribe(audio, fields)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        server.requests.append({"path": request.url.path, "auth": request.headers.get("authorization"), "body": body})
        if (answer := canned()) is not None:
            return answer
        message = {"role": "assistant", "content": server.chat(body)}
        return {"id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    return app


@contextmanager
def openai_server(**answers: Any) -> Iterator[LoopbackServer]:
    server = LoopbackServer(**answers)
    runner = uvicorn.Server(uvicorn.Config(_app(server), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not runner.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the loopback server did not start")
        time.sleep(0.01)
    port = runner.servers[0].sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield server
    finally:
        runner.should_exit = True
        thread.join(timeout=10)
