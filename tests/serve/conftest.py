"""A real server on loopback (uvicorn in a thread) around a tiny model, for the official clients."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from tests.conftest import make_tiny_model

from unisono.serve.config import ServerConfig

KEY = "sk-unisono-test"


@dataclass
class Running:
    url: str
    app: object
    engine: object

    @property
    def v1(self) -> str:
        return self.url + "/v1"


def start_server(model, config: ServerConfig, name: str = "tiny"):
    import uvicorn

    from unisono.serve.app import create_app
    from unisono.serve.engine import Engine

    engine = Engine(model, name)
    app = create_app(engine, config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Running(f"http://127.0.0.1:{port}", app, engine), server, thread


@pytest.fixture(scope="package")
def serve_model(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer, "qwen3", seed=5)


@pytest.fixture(scope="package")
def server(serve_model):
    running, server, thread = start_server(serve_model, ServerConfig(api_keys=(KEY,), max_upload_mb=2.0,
                                                                     max_audio_s=60.0, max_tokens=64,
                                                                     max_concurrent_per_key=8))
    yield running
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def client(server):
    import openai

    return openai.OpenAI(base_url=server.v1, api_key=KEY, max_retries=0, timeout=120)
