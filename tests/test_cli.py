"""The `unisono` command line, run as a user runs it (a subprocess), on a saved tiny checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import make_tiny_model

UNISONO = [sys.executable, "-m", "unisono.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*UNISONO, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def checkpoint(tiny_tokenizer, tmp_path_factory) -> Path:
    return make_tiny_model(tiny_tokenizer, seed=5).save(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.mark.slow
def test_transcribe_formats_and_mtp_flag(checkpoint, example_wav, tmp_path):
    txt = run("transcribe", str(example_wav), "--model", str(checkpoint))
    assert txt.returncode == 0, txt.stderr
    greedy = run("transcribe", str(example_wav), "--model", str(checkpoint), "--no-mtp")
    assert greedy.returncode == 0 and greedy.stdout == txt.stdout  # verified decoding changes nothing
    out = run("transcribe", str(example_wav), "--model", str(checkpoint), "--format", "json", "-o", str(tmp_path))
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "lj001-0001.json").read_text())
    assert doc["text"] == txt.stdout.strip() and doc["duration"] == pytest.approx(9.655, abs=0.01)
    assert doc["stats"]["passes"] >= 1


@pytest.mark.slow
def test_bad_files_are_reported_and_the_rest_transcribed(checkpoint, example_wav, tmp_path):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (tmp_path / "empty.wav").write_bytes(b"")
    r = run("transcribe", str(tmp_path / "corrupt.wav"), str(example_wav), str(tmp_path / "empty.wav"),
            str(tmp_path / "missing.wav"), "--model", str(checkpoint))
    assert r.returncode == 1
    assert "corrupt.wav" in r.stderr and "not a readable audio file" in r.stderr
    assert "empty.wav" in r.stderr and "missing.wav" in r.stderr
    assert f"{example_wav}:" in r.stdout  # the good file is still transcribed
    assert "Traceback" not in r.stderr


def test_missing_model_is_a_clear_error(tmp_path, example_wav):
    r = run("transcribe", str(example_wav), "--model", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no unisono checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_bad_option_values(checkpoint, example_wav):
    r = run("transcribe", str(example_wav), "--model", str(checkpoint), "--format", "docx")
    assert r.returncode == 2 and "docx" in r.stderr


def test_version():
    from unisono import __version__

    r = run("version")
    assert r.returncode == 0 and r.stdout.strip() == __version__
