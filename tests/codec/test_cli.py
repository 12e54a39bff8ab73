"""`unisono codec tokenize`, `resynth` and `detokenize` on a small random codec (bundled encoder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from unisono.cli import app
from unisono.codec import CodecConfig, SpeechCodec
from unisono.codec.config import SpeakerEncoderConfig, Token2MelConfig, VocoderConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    c = CodecConfig(speaker=SpeakerEncoderConfig(channels=16, n_layers=2, dim=8),
                    token2mel=Token2MelConfig(dim=32, n_layers=2, n_heads=2, ffn_dim=64),
                    vocoder=VocoderConfig(dim=32, intermediate_dim=64, n_layers=2))
    c.tokenizer.codebook_size = 32
    return SpeechCodec(c, centroids=torch.randn(32, 384)).save(tmp_path_factory.mktemp("codec") / "speech")


def _clips(folder: Path) -> Path:
    from unisono.audio.io import save_audio

    (folder / "wav").mkdir(parents=True)
    rows = []
    for i, seconds in enumerate((0.7, 1.3)):
        t = np.arange(int(seconds * 16000)) / 16000
        save_audio(folder / "wav" / f"c{i}.wav", (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
        rows.append({"id": f"c{i}", "audio": f"wav/c{i}.wav", "text": "hi", "language": "en", "duration": seconds})
    (folder / "wav/bad.wav").write_bytes(b"RIFF not audio")
    rows.append({"id": "bad", "audio": "wav/bad.wav", "text": "x", "language": "en", "duration": 1.0})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


def test_tokenize_adds_speech_tokens_skips_unreadable_audio_and_resumes(codec_dir, tmp_path):
    from unisono.data.manifest import read_manifest

    manifest = _clips(tmp_path / "in")
    out = tmp_path / "out" / "manifest.jsonl"
    args = ["codec", "tokenize", str(manifest), str(out), "--codec", str(codec_dir), "--batch", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = read_manifest(out)
    assert [u.id for u in rows] == ["c0", "c1"]
    codec = SpeechCodec.load(codec_dir)
    for u in rows:
        from unisono.audio.io import load_audio

        audio = load_audio(out.parent / u.audio)
        assert u.meta["speech_tokens"] == codec.tokenize(audio).tolist()
        assert len(u.meta["speech_tokens"]) == int(np.ceil(len(audio) / 640))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and len(read_manifest(out)) == 2  # nothing written twice


def test_resynth_writes_640_samples_per_token(codec_dir, tmp_path):
    from unisono.audio.io import load_audio

    manifest = _clips(tmp_path / "in")
    out = tmp_path / "re.wav"
    result = CliRunner().invoke(app, ["codec", "resynth", str(manifest.parent / "wav/c1.wav"), str(out), "--codec", str(codec_dir)])
    assert result.exit_code == 0, result.output
    tokens = result.output.split()
    assert len(tokens) == int(np.ceil(1.3 * 16000 / 640)) and all(0 <= int(t) < 32 for t in tokens)
    assert len(load_audio(out)) == 640 * len(tokens)
    bad = CliRunner().invoke(app, ["codec", "resynth", str(manifest.parent / "wav/bad.wav"), str(out), "--codec", str(codec_dir)])
    assert bad.exit_code == 2


def _said(output: str) -> str:
    """A CLI error as one line: rich wraps its panel at the terminal's width."""
    return " ".join(output.replace("│", " ").split())


def test_detokenize_renders_what_resynth_printed_as_resynth_did(codec_dir, tmp_path):
    from unisono.audio.io import load_audio

    manifest = _clips(tmp_path / "in")
    clip = str(manifest.parent / "wav/c1.wav")
    runner = CliRunner()
    re = runner.invoke(app, ["codec", "resynth", clip, str(tmp_path / "re.wav"), "--codec", str(codec_dir)])
    assert re.exit_code == 0, re.output
    (tmp_path / "tokens.txt").write_text(re.output)
    args = ["--reference", clip, "--codec", str(codec_dir)]
    de = runner.invoke(app, ["codec", "detokenize", str(tmp_path / "tokens.txt"), str(tmp_path / "de.wav"), *args])
    assert de.exit_code == 0, de.output
    np.testing.assert_array_equal(load_audio(tmp_path / "de.wav"), load_audio(tmp_path / "re.wav"))
    piped = runner.invoke(app, ["codec", "detokenize", "-", str(tmp_path / "pipe.wav"), *args], input=",".join(re.output.split()))
    assert piped.exit_code == 0, piped.output
    np.testing.assert_array_equal(load_audio(tmp_path / "pipe.wav"), load_audio(tmp_path / "re.wav"))

    for text, says in (("3 x 4", "is not a token"), ("", "holds no tokens"), ("3 32", "0..31")):
        (tmp_path / "bad.txt").write_text(text)
        bad = runner.invoke(app, ["codec", "detokenize", str(tmp_path / "bad.txt"), str(tmp_path / "bad.wav"), *args])
        assert bad.exit_code == 2 and says in _said(bad.output), bad.output
    missing = runner.invoke(app, ["codec", "detokenize", str(tmp_path / "none.txt"), str(tmp_path / "bad.wav"), *args])
    assert missing.exit_code == 2 and "cannot read" in _said(missing.output)
    corrupt_voice = runner.invoke(app, ["codec", "detokenize", str(tmp_path / "tokens.txt"), str(tmp_path / "bad.wav"),
                                        "--reference", str(manifest.parent / "wav/bad.wav"), "--codec", str(codec_dir)])
    assert corrupt_voice.exit_code == 2
    assert not (tmp_path / "bad.wav").exists()


def test_detokenize_streams_raw_pcm_equal_to_the_wav_as_lines_of_tokens_arrive(codec_dir, tmp_path):
    import soundfile as sf

    manifest = _clips(tmp_path / "in")
    clip = str(manifest.parent / "wav/c1.wav")
    runner = CliRunner()
    tokens = runner.invoke(app, ["codec", "resynth", clip, str(tmp_path / "re.wav"), "--codec", str(codec_dir)]).stdout.split()
    args = ["--reference", clip, "--codec", str(codec_dir)]
    lines = "".join(" ".join(tokens[i:i + 3]) + "\n" for i in range(0, len(tokens), 3))  # a decoder's output, 3 at a time
    streamed = runner.invoke(app, ["codec", "detokenize", "-", "-", *args], input=lines)
    assert streamed.exit_code == 0, streamed.output
    wav, _ = sf.read(tmp_path / "re.wav", dtype="int16")
    pcm = np.frombuffer(streamed.stdout_bytes, dtype="<i2")
    assert pcm.shape == wav.shape
    # windowed recomputation matches the offline floats to rounding, which can flip a 16-bit step
    assert np.abs(pcm.astype(int) - wav).max() <= 2

    broken = runner.invoke(app, ["codec", "detokenize", "-", "-", *args], input=" ".join(tokens[:5]) + "\n3 99\n")
    assert broken.exit_code == 2 and "0..31" in _said(broken.stderr)
    assert len(broken.stdout_bytes) < 2 * 640 * 5  # what was ready before the bad line, no more
