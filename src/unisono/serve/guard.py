"""Every /v1 request passes here first: its API key, its body size, its key's concurrency, its
time limit; and its status and latency are counted.

A pure ASGI middleware (not a FastAPI dependency) so that it holds a request's slot until the
last byte of a streamed answer has left."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import Counter
from typing import Any

from unisono.serve.config import ServerConfig
from unisono.serve.errors import error_body
from unisono.serve.metrics import Metrics


class BodyTooLarge(Exception):
    pass


class Gate:
    """API keys (compared in constant time) and the requests each key has in flight."""

    def __init__(self, config: ServerConfig):
        self.keys = [k.encode() for k in config.api_keys]
        self.limit = config.max_concurrent_per_key
        self.active: Counter[str] = Counter()

    def identify(self, authorization: str | None) -> str | None:
        """The caller's key ("" when the server has none), or None when it is not let in."""
        if not self.keys:
            return ""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        given = token.strip().encode()
        # every key is compared, so the time taken tells nothing about which one nearly matched
        matches = [hmac.compare_digest(given, key) for key in self.keys]
        return token.strip() if any(matches) else None

    def acquire(self, key: str) -> bool:
        if self.active[key] >= self.limit:
            return False
        self.active[key] += 1
        return True

    def release(self, key: str) -> None:
        self.active[key] -= 1
        if self.active[key] <= 0:
            del self.active[key]


def endpoint_of(path: str) -> str:
    """A metrics label: the route, not the raw path."""
    for name in ("transcriptions", "translations", "speech", "chat/completions", "models", "realtime"):
        if path.startswith(f"/v1/{name}") or path.startswith(f"/v1/audio/{name}"):
            return name.replace("/", "_")
    return "other"


class Guard:
    def __init__(self, app: Any, config: ServerConfig, gate: Gate, metrics: Metrics):
        self.app, self.config, self.gate, self.metrics = app, config, gate, metrics
        self.max_body = int(config.max_upload_mb * 1024 * 1024)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [0]
        endpoint = endpoint_of(scope["path"])

        async def answer(code: int, message: str, extra: list | None = None) -> None:
            status[0] = code
            body = json.dumps(error_body(code, message)).encode()
            await send({"type": "http.response.start", "status": code,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                    *(extra or [])]})
            await send({"type": "http.response.body", "body": body})

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = self.gate.identify(headers.get("authorization"))
        try:
            if key is None:
                return await answer(401, "a valid API key is required (Authorization: Bearer KEY)",
                                    [(b"www-authenticate", b"Bearer")])
            length = headers.get("content-length")
            if length and length.isdigit() and int(length) > self.max_body:
                return await answer(413, f"the request body is {int(length) / 2**20:.1f} MB; this server takes at "
                                    f"most {self.config.max_upload_mb:g} MB")
            if not self.gate.acquire(key):
                return await answer(429, f"too many requests at once: at most {self.gate.limit} per API key",
                                    [(b"retry-after", b"1")])
            try:
                await self._run(scope, receive, send, answer, status)
            finally:
                self.gate.release(key)
        finally:
            self.metrics.observe(endpoint, status[0] or 500, time.perf_counter() - started)

    async def _run(self, scope, receive, send, answer, status) -> None:
        received, too_large = [0], [False]

        async def counted_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > self.max_body:  # a chunked body with no length announced
                    too_large[0] = True
                    raise BodyTooLarge()
            return message

        async def tracked_send(message: dict) -> None:
            if too_large[0]:  # the app's answer to a body it could not finish reading: ours replaces it
                return
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            pass
        except TimeoutError:
            if not status[0]:
                await answer(504, f"the request took longer than {self.config.request_timeout_s:g} s")
        if too_large[0] and not status[0]:
            await answer(413, f"the request body is over {self.config.max_upload_mb:g} MB")
