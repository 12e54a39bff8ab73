"""`unisono serve` as a user starts it: the embedded model behind the OpenAI API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_command_transcribes_like_the_library(example_wav, tmp_path):
    from unisono.model.unisono import Unisono

    port = _free_port()
    keys = tmp_path / "keys.txt"
    keys.write_text("# keys\nsk-one\n\nsk-two\n")
    unisono = Path(sys.executable).with_name("unisono")
    process = subprocess.Popen([str(unisono), "serve", "--port", str(port), "--api-keys-file", str(keys), "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-two", max_retries=0, timeout=120)
        deadline = time.time() + 120
        while True:
            try:
                models = client.models.list()
                break
            except openai.APIConnectionError:
                assert process.poll() is None, process.stdout.read()
                assert time.time() < deadline, "the server did not come up in 120 s"
                time.sleep(0.5)
        assert [m.id for m in models.data] == ["unisono-tiny"]
        served = client.audio.transcriptions.create(model="unisono-tiny", file=example_wav)
        assert served.text == Unisono.load().transcribe(example_wav).text
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "Traceback" not in output
    assert process.returncode == 0 or process.returncode == -15


def test_serve_refuses_a_missing_model_and_keys_file(tmp_path):
    unisono = Path(sys.executable).with_name("unisono")
    wide = {**os.environ, "COLUMNS": "300"}  # the error box wraps at the terminal's width
    r = subprocess.run([str(unisono), "serve", "--model", str(tmp_path)], capture_output=True, text=True, timeout=120,
                       env=wide)
    assert r.returncode == 2 and "not a model directory" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([str(unisono), "serve", "--api-keys-file", str(tmp_path / "nope")], capture_output=True,
                       text=True, timeout=120, env=wide)
    assert r.returncode == 2 and "no such file" in r.stderr
