"""`unisono data synth` and `unisono data stats`, run as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unisono.data.manifest import read_manifest
from unisono.data.synth import SENTENCES_NAME
from unisono.data.text import Sentence, write_sentences

UNISONO = [sys.executable, "-m", "unisono.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*UNISONO, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed")
def test_synth_then_stats(tmp_path: Path) -> None:
    corpus = tmp_path / "synth"
    write_sentences(corpus / SENTENCES_NAME, [
        Sentence("a1", "The early bird gets the worm.", "The early bird gets the worm.", "en", "test:en#0"),
        Sentence("b2", "大家都是志愿者。", "大家都是志愿者。", "zh", "test:zh#0"),
    ])
    built = run("data", "synth", "--out", str(corpus), "--max-clips", "2", "--workers", "1", "--engines", "espeak-ng")
    assert built.returncode == 0, built.stderr
    assert "clips/s" in built.stderr and "audio hours per wall hour" in built.stderr
    utts = read_manifest(corpus)
    assert sorted(u.language for u in utts) == ["en", "en", "zh", "zh"]

    plot = tmp_path / "stats.png"
    stats = run("data", "stats", str(corpus), "--plot", str(plot), "--by", "engine,voice",
                "--index", str(tmp_path / "ix.duckdb"))
    assert stats.returncode == 0, stats.stderr
    assert "hours by language" in stats.stdout and "hours by engine, voice" in stats.stdout
    assert f"total: 4 clips, {sum(u.duration for u in utts) / 3600:.2f} h" in stats.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "ix.duckdb").exists()


@pytest.mark.slow
def test_stats_refuses_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.jsonl"
    bad.write_text('{"id": "x", "audio": "a.wav"}\n')
    out = run("data", "stats", str(bad))
    assert out.returncode == 2 and "missing field" in out.stderr and "Traceback" not in out.stderr
    out = run("data", "stats", str(tmp_path / "nope"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    out = run("data", "stats", str(bad), "--by", "text")
    assert out.returncode == 2 and "--by" in out.stderr


@pytest.mark.slow
def test_synth_refuses_a_corrupt_manifest(tmp_path: Path) -> None:
    corpus = tmp_path / "synth"
    write_sentences(corpus / SENTENCES_NAME, [Sentence("a1", "Hello there all.", "Hello there all.", "en", "t#0")])
    (corpus / "manifest.jsonl").write_text('{"id": "x"\n{"id": "y"}\n')
    out = run("data", "synth", "--out", str(corpus), "--max-clips", "1", "--workers", "1")
    assert out.returncode == 1 and "manifest.jsonl:1: not valid JSON" in out.stderr and "Traceback" not in out.stderr
