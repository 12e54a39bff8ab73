"""A real server on loopback (uvicorn in a thread) around a tiny model, for the official clients."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
import torch
from tests.conftest import make_tiny_model

from unisono.decode.session import Session, SessionConfig
from unisono.modes.asr import text_tokens_mask
from unisono.model.vocab import Audio, Turn
from unisono.serve.config import ServerConfig

KEY = "sk-unisono-test"


def greedy_reply(model, turns, max_tokens, audio=None):
    """The reply decoded alone, in-process: the reference for the server's answer."""
    feats = lengths = None
    if audio is not None:
        from unisono.audio.features import batch_log_mel

        mel, mel_lengths = batch_log_mel([audio], n_mels=model.config.encoder.n_mels)
        feats, lengths = model.encode_audio(mel, mel_lengths)
        turns = [Turn(t.role, [Audio(int(lengths[0])) if p is None else p for p in t.parts]) for t in turns]
    prompt = model.vocab.encode_prompt(turns)
    with torch.no_grad():
        embeds = model.embed_prompt(torch.tensor([prompt.ids]), feats, lengths)[0]
        session = Session(model, SessionConfig(max_new_tokens=max_tokens, stop_ids=(model.vocab.end_id,),
                                               allowed=text_tokens_mask(model)))
        session.prefill(embeds)
        tokens = list(session.tokens())
    return model.vocab.decode_text(tokens), len(prompt.ids), len(tokens)



def wait_idle(engine, timeout: float = 20.0) -> int:
    """The engine's active sessions once they reach 0 or the time is up (a cancelled session
    leaves the batch at the scheduler's next pass)."""
    deadline = time.time() + timeout
    while engine.active_sessions and time.time() < deadline:
        time.sleep(0.05)
    return engine.active_sessions


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


@pytest.fixture(scope="package")
def speaking_server():
    """A server on the embedded model, which has speech tokens and a codec: it can speak."""
    from unisono.model.unisono import Unisono

    # short answers: a spoken answer is decoded twice (its text, then its speech tokens)
    running, server, thread = start_server(Unisono.load(), ServerConfig(max_tokens=24), name="unisono-tiny")
    yield running
    server.should_exit = True
    thread.join(timeout=30)
