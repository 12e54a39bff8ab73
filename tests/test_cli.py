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


# ---- transcribe, in process (fast; lets a test break the model on purpose) --------------------
def invoke(*args: str, input: bytes | None = None):
    from typer.testing import CliRunner

    from unisono.cli import app

    return CliRunner().invoke(app, list(args), input=input)


@pytest.fixture(scope="module")
def two_clips(real_speech_dir, tmp_path_factory) -> list[Path]:
    """Two real clips under the same name in different folders and formats (a/x.flac, b/x.wav)."""
    import soundfile as sf

    base = tmp_path_factory.mktemp("clips")
    out = []
    for folder, name, fmt in [("a", "LJ001-0002", "flac"), ("b", "LJ001-0007", "wav")]:
        audio, rate = sf.read(real_speech_dir / "ljspeech_lj001" / "wav" / f"{name}.wav", dtype="float32")
        (base / folder).mkdir()
        sf.write(base / folder / f"x.{fmt}", audio, rate)
        out.append(base / folder / f"x.{fmt}")
    return out


def test_json_for_several_files_is_one_json_array(checkpoint, two_clips):
    r = invoke("transcribe", *map(str, two_clips), "--model", str(checkpoint), "--format", "json")
    assert r.exit_code == 0, r.output
    docs = json.loads(r.stdout)  # was two objects glued together: }{
    assert [d["source"] for d in docs] == [str(p) for p in two_clips]
    one = invoke("transcribe", str(two_clips[0]), "--model", str(checkpoint), "--format", "json")
    assert json.loads(one.stdout) == docs[0]  # one file: the object itself


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_for_several_files_name_their_file(checkpoint, two_clips, fmt):
    r = invoke("transcribe", *map(str, two_clips), "--model", str(checkpoint), "--format", fmt)
    assert r.exit_code == 0, r.output
    headers = [line for line in r.stdout.splitlines() if line.startswith("==> ")]
    assert headers == [f"==> {p} <==" for p in two_clips]
    alone = invoke("transcribe", str(two_clips[1]), "--model", str(checkpoint), "--format", fmt).stdout
    assert r.stdout.split(f"==> {two_clips[1]} <==\n")[1].strip() == alone.strip()


def test_outputs_of_files_with_the_same_name_do_not_overwrite_each_other(checkpoint, two_clips, tmp_path):
    r = invoke("transcribe", *map(str, two_clips), "--model", str(checkpoint), "-o", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.txt"))
    assert written == ["a/x.flac.txt", "b/x.wav.txt"]
    for p in two_clips:
        alone = invoke("transcribe", str(p), "--model", str(checkpoint)).stdout
        assert (tmp_path / "out" / p.parent.name / f"{p.name}.txt").read_text() == alone
    r = invoke("transcribe", str(two_clips[0]), "--model", str(checkpoint), "-o", str(tmp_path / "single"))
    assert (tmp_path / "single" / "x.txt").is_file()  # a name used once keeps the plain form


@pytest.mark.parametrize("args, hint", [
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-1"], "--batch-size"),
    (["--threads", "-3"], "--threads"), (["--drafts", "99"], "--drafts"), (["-o", "FILE"], "--output-dir"),
])
def test_bad_numbers_and_paths_are_one_line_errors(checkpoint, example_wav, tmp_path, args, hint):
    (tmp_path / "FILE").write_text("not a folder")
    args = [str(tmp_path / a) if a == "FILE" else a for a in args]
    r = run("transcribe", str(example_wav), "--model", str(checkpoint), *args)
    assert r.returncode == 2 and hint in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "Error" in r.stderr and len(r.stderr) < 2000


def test_stdin_is_read_from_dash(checkpoint, example_wav):
    from_file = invoke("transcribe", str(example_wav), "--model", str(checkpoint))
    piped = invoke("transcribe", "-", "--model", str(checkpoint), input=example_wav.read_bytes())
    assert piped.exit_code == 0, piped.output
    assert piped.stdout == from_file.stdout and piped.stdout.strip()


def test_a_zero_byte_file_is_refused_before_the_model_loads(tmp_path, monkeypatch, checkpoint):
    from unisono.cli import _default_checkpoint
    from unisono.model.unisono import Unisono, default_model_path

    assert _default_checkpoint() == default_model_path()  # found without importing the model code

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded for a file that cannot be transcribed")

    monkeypatch.setattr(Unisono, "load", no_loading)
    (tmp_path / "empty.wav").write_bytes(b"")
    r = invoke("transcribe", str(tmp_path / "empty.wav"), "--model", str(checkpoint))
    assert r.exit_code == 1 and "empty.wav" in r.stderr and "empty" in r.stderr


def test_stats_ends_with_a_total(checkpoint, two_clips):
    r = invoke("transcribe", *map(str, two_clips), "--model", str(checkpoint), "--stats")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if "decoder passes" in line]
    assert len(lines) == 3 and lines[-1].startswith("total")
    per_file = [int(line.split(" tokens")[0].split()[-1]) for line in lines[:2]]
    assert int(lines[-1].split(" tokens")[0].split()[-1]) == sum(per_file)


def test_a_crash_in_one_file_does_not_stop_the_others(checkpoint, two_clips, monkeypatch):
    from unisono.model.unisono import Unisono

    real = Unisono.transcribe
    calls = []

    def first_one_breaks(self, audio, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("index 767 is out of bounds for dimension 1 with size 767")
        return real(self, audio, **kwargs)

    monkeypatch.setattr(Unisono, "transcribe", first_one_breaks)
    r = invoke("transcribe", *map(str, two_clips), "--model", str(checkpoint))
    assert r.exit_code == 1
    assert str(two_clips[0]) in r.stderr and "index 767" in r.stderr
    assert r.stdout.startswith(f"{two_clips[1]}: ")  # the next file is still transcribed


# ---- speak, as a user runs it -----------------------------------------------------------------
def test_speak_writes_files_and_streams_the_same_audio(tmp_path):
    import numpy as np
    import soundfile as sf

    out = tmp_path / "hi.flac"
    r = run("speak", "Hello there.", "-o", str(out), "--seed", "4")
    assert r.returncode == 0, r.stderr
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 16000 and len(audio) > 1600
    streamed = subprocess.run([*UNISONO, "speak", "-", "--stream", "--seed", "4"],
                              input=b"Hello there.", capture_output=True, timeout=300)
    assert streamed.returncode == 0, streamed.stderr.decode()
    pcm = np.frombuffer(streamed.stdout, "<i2").astype(np.float32) / 32767
    assert len(pcm) == len(audio) and np.abs(pcm - audio).max() < 2e-4  # the same samples, 16-bit both ways
    r = run("speak", "Hi.", "--voice", "alloy", "-o", str(tmp_path / "x.wav"))
    assert r.returncode == 2 and "no voice named 'alloy'" in " ".join(r.stderr.split()) and "Traceback" not in r.stderr
    r = run("speak", "Hi.", "--format", "mp3", "-o", str(tmp_path / "x.mp3"))
    assert r.returncode == 2 and "mp3" in r.stderr
    r = run("speak", "Hi.", "--voice-text", "hello", "-o", str(tmp_path / "x.wav"))  # a named voice has no tokens
    assert r.returncode == 2 and "reference recording itself" in " ".join(r.stderr.split()) and "Traceback" not in r.stderr
    r = run("speak", "🙂 !!!", "-o", str(tmp_path / "x.wav"))
    assert r.returncode == 2 and "no letter or digit" in " ".join(r.stderr.split())
    r = run("speak", "Привет.", "--instruct", "Sing it.", "-o", str(tmp_path / "x.wav"), "--seed", "1")
    assert r.returncode == 0 and "CYRILLIC" in r.stderr and "none of the controls" in " ".join(r.stderr.split())


def test_chat_hears_answers_and_writes_replies(tmp_path, example_wav):
    r = run("chat", "-i", str(example_wav), "-i", str(example_wav), "--system", "You are Ada.", "--seed", "2",
            "-o", str(tmp_path / "replies"), "--max-tokens", "12")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("you: ") == 2 and r.stdout.count("unisono: ") == 2
    assert sorted(p.name for p in (tmp_path / "replies").iterdir()) <= ["reply-1.wav", "reply-2.wav"]
    r = run("chat", "-i", str(tmp_path / "nope.wav"))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = run("chat", "-i", str(example_wav), "-o", str(tmp_path / "reply.wav"))  # a file name where a folder goes
    assert r.returncode == 2 and "folder" in r.stderr and not (tmp_path / "reply.wav").exists()


def test_chat_from_the_microphone_answers_each_utterance(example_wav, monkeypatch):
    """The live loop on a stream of 160 ms blocks as a microphone gives them (a recording here):
    two utterances, two turns, each reply played; a machine without audio devices is told so."""
    import numpy as np
    from typer.testing import CliRunner

    from unisono.audio import microphone
    from unisono.audio.io import load_audio
    from unisono.cli import app

    audio = load_audio(example_wav)
    x = np.concatenate([np.zeros(8000, np.float32), audio[: 16000 * 3], np.zeros(24000, np.float32),
                        audio[16000 * 4 : 16000 * 7], np.zeros(16000, np.float32)])
    played, discarded = [], []

    class Recording:  # a microphone that delivers the stream's blocks one after another
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def __iter__(self):
            return iter([x[i : i + 2560] for i in range(0, len(x), 2560)])

        def discard_pending(self):
            discarded.append(True)

    monkeypatch.setattr(microphone, "Microphone", Recording)
    monkeypatch.setattr(microphone, "play", lambda a: played.append(len(a)))
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["chat", "--mic", "--max-tokens", "6", "--seed", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("you: ") == 2 and result.output.count("unisono: ") == 2
    assert len(played) == 2 and all(n > 0 for n in played)
    assert len(discarded) == 2  # what the microphone heard while answering is dropped

    def no_portaudio():
        raise microphone.DeviceError("live audio needs the PortAudio library (Debian/Ubuntu: apt-get install libportaudio2)")

    monkeypatch.setattr(microphone, "Microphone", no_portaudio)
    result = CliRunner().invoke(app, ["chat", "--mic", "--text-only"])
    assert result.exit_code == 1 and "PortAudio" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["chat", "--mic", "-i", str(example_wav)])
    assert result.exit_code == 2 and "not both" in result.output
