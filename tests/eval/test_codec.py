"""Codec evaluation: entropy by hand, streaming latency output, a whole set with a scripted
recogniser (WER arithmetic, rates), the report, and the CLI on a bad codec folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from unisono.eval.codec import evaluate_set, first_chunk_latency, token_entropy_bits, write_report
from unisono.model.config import EncoderConfig
from unisono.model.encoder import AudioEncoder
from unisono.codec import CodecConfig, SpeechCodec
from unisono.codec.config import SpeakerEncoderConfig, Token2MelConfig, VocoderConfig
from unisono.codec.tokenizer import SpeechTokenizer


def test_token_entropy_by_hand():
    assert token_entropy_bits([np.array([0, 0, 1, 1])], 8) == pytest.approx(1.0)
    assert token_entropy_bits([np.array([0, 1]), np.array([2, 3])], 4) == pytest.approx(2.0)
    assert token_entropy_bits([np.array([5, 5, 5])], 8) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def codec() -> SpeechCodec:
    torch.manual_seed(0)
    c = CodecConfig(speaker=SpeakerEncoderConfig(channels=16, n_layers=2, dim=8),
                    token2mel=Token2MelConfig(dim=32, n_layers=2, n_heads=2, ffn_dim=64),
                    vocoder=VocoderConfig(dim=32, intermediate_dim=64, n_layers=2))
    c.tokenizer.layer, c.tokenizer.codebook_size = 2, 16
    codec = SpeechCodec(c, centroids=torch.randn(16, 32)).eval()
    enc = AudioEncoder(EncoderConfig(d_model=32, n_layers=2, n_heads=2, ffn_dim=64))
    object.__setattr__(codec, "_tokenizer", SpeechTokenizer(c.tokenizer, encoder=enc, centroids=codec.centroids))
    return codec


def test_first_chunk_latency_streams_the_offline_audio(codec):
    tokens, voice = torch.randint(0, 16, (40,)), torch.randn(8)
    latency, audio = first_chunk_latency(codec, tokens, voice)
    assert 0 < latency < 5
    np.testing.assert_allclose(audio, codec.detokenize(tokens, voice), atol=1e-5)


class Scripted:
    """Hears the reference on original audio and one wrong word on resynthesised audio (told apart by length parity)."""

    name = "scripted"

    def __init__(self, texts: dict[int, str]):
        self.texts = texts

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        text = self.texts[-(-len(audio) // 640)]
        return text if len(audio) % 640 else text.rsplit(" ", 1)[0] + " wrong"


def write_two_clips(folder: Path) -> dict[int, str]:
    """Two tones of 1.01 s and 1.51 s with their manifest in `folder`; returns each clip's text by token count."""
    from unisono.audio.io import save_audio

    texts, rows = {}, []
    for i, (seconds, text) in enumerate(((1.01, "the cat sat down"), (1.51, "hello there"))):
        n = int(seconds * 16000)
        save_audio(folder / f"a{i}.wav", (0.2 * np.sin(2 * np.pi * 220 * np.arange(n) / 16000)).astype(np.float32))
        texts[-(-n // 640)] = text
        rows.append({"id": f"a{i}", "audio": f"a{i}.wav", "text": text, "language": "en", "duration": seconds})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return texts


def test_evaluate_set_scores_both_sides_and_counts_rates(codec, tmp_path):
    from unisono.eval.manifest import load_set

    texts = write_two_clips(tmp_path)
    examples: dict = {}
    r = evaluate_set(codec, Scripted(texts), None, load_set(tmp_path), keep_audio=examples)
    assert len(r.clips) == 2
    assert r.wer_original == 0.0
    assert r.wer_resynth == pytest.approx(2 / 6)  # one substitution in each, 6 reference words
    assert r.runaway_original == r.runaway_resynth == 0
    assert (r.loop_free_clips, r.wer_original_loop_free, r.wer_resynth_loop_free) == (2, 0.0, r.wer_resynth)
    assert r.token_rate == pytest.approx((26 + 38) / (2.52), rel=1e-3)
    assert r.bitrate_nominal == pytest.approx(r.token_rate * math.log2(16))
    assert 0 <= r.bitrate_entropy <= r.bitrate_nominal
    assert r.detokenizer_rtf > 0 and r.first_chunk_ms > 0
    assert set(examples) == {tmp_path.name}

    path = write_report([r], tmp_path / "report", "unisono eval codec -m x", {"codebook": 16})
    text = path.read_text()
    # resampling two clips of 4 and 2 words, one error each: 2/8, 2/6 or 2/4, so the interval spans 25 to 50
    assert "| 0.0% | 33.3% | +33.3 (+25.0 to +50.0) |" in text and "| 0 / 0 |" in text
    assert json.loads((tmp_path / "report/results.json").read_text())["sets"][0]["wer_resynth"] == pytest.approx(1 / 3)
    assert r.check_recognizer is None and "check recogniser" not in text
    assert r.recognizer == "scripted" and "Recogniser: scripted" in text


class Deaf:
    """A check recogniser that hears every original and nothing of a resynthesis."""

    name = "deaf"

    def __init__(self, texts: dict[int, str]):
        self.texts = texts

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        return self.texts[-(-len(audio) // 640)] if len(audio) % 640 else ""


def test_a_check_recogniser_scores_the_same_audio_apart_from_the_first(codec, tmp_path):
    from unisono.audio.io import save_audio
    from unisono.eval.manifest import load_set

    n = int(1.01 * 16000)
    save_audio(tmp_path / "a.wav", (0.2 * np.sin(2 * np.pi * 220 * np.arange(n) / 16000)).astype(np.float32))
    texts = {-(-n // 640): "the cat sat down"}
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "the cat sat down",
                                                         "language": "en", "duration": 1.01}) + "\n")
    r = evaluate_set(codec, Scripted(texts), None, load_set(tmp_path), check=Deaf(texts))
    assert (r.wer_original, r.wer_resynth) == (0.0, pytest.approx(1 / 4))  # the first recogniser's figures are its own
    assert (r.check_wer_original, r.check_wer_resynth) == (0.0, 1.0)       # four deletions
    assert r.check_recognizer == "deaf"
    assert (r.clips[0].check_original, r.clips[0].check_resynth) == ("the cat sat down", "")
    text = write_report([r], tmp_path / "report", "unisono eval codec -m x", {}).read_text()
    assert f"| {tmp_path.name} | deaf | 0.0% | 100.0% | +100.0 |" in text
    assert json.loads((tmp_path / "report/results.json").read_text())["sets"][0]["clips"][0]["check_resynth"] == ""


def test_a_recogniser_loop_counts_as_a_runaway_clip_and_ordinary_errors_do_not():
    from unisono.eval.codec import is_runaway
    from unisono.eval.metrics import count_errors

    ref = "the cat sat down"
    assert is_runaway(count_errors(ref, "the cat sat down " + "and so on " * 2, "word"))
    assert not is_runaway(count_errors(ref, "a dog stood up and then", "word"))  # 4 substitutions, 1 insertion
    assert not is_runaway(count_errors(ref, "", "word"))


class LoopsOnTheLongClip(Scripted):
    """As Scripted, but loops on the resynthesis of the longest clip."""

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        text = super().transcribe(audio, language)
        return text + " and so on" * 5 if len(audio) % 640 == 0 and len(audio) == 640 * max(self.texts) else text


def test_the_loop_free_wer_sets_aside_the_clips_where_the_recogniser_looped(codec, tmp_path):
    from unisono.eval.manifest import load_set

    texts = write_two_clips(tmp_path)
    r = evaluate_set(codec, LoopsOnTheLongClip(texts), None, load_set(tmp_path))
    assert (r.runaway_original, r.runaway_resynth) == (0, 1)
    assert r.wer_resynth == pytest.approx((1 + 1 + 15) / 6)   # the loop's 15 insertions swamp the set
    assert r.loop_free_clips == 1                              # "hello there" looped and is set aside
    assert (r.wer_original_loop_free, r.wer_resynth_loop_free) == (0.0, pytest.approx(1 / 4))
    text = write_report([r], tmp_path / "report", "unisono eval codec -m x", {}).read_text()
    assert f"| {tmp_path.name} | 1 | 0.0% | 25.0% | +25.0 |" in text


def test_an_unreadable_clip_is_left_out_and_named(codec, tmp_path):
    from unisono.eval.manifest import load_set

    texts = write_two_clips(tmp_path)
    (tmp_path / "a1.wav").write_bytes(b"not audio at all" * 100)
    r = evaluate_set(codec, Scripted(texts), None, load_set(tmp_path))
    assert [c.id for c in r.clips] == ["a0"] and r.wer_resynth == pytest.approx(1 / 4)
    assert [u["id"] for u in r.unreadable] == ["a1"] and "not a readable audio file" in r.unreadable[0]["error"]
    text = write_report([r], tmp_path / "report", "unisono eval codec -m x", {}).read_text()
    assert f"Unreadable clips of {tmp_path.name}, left out: a1 (" in text


def test_cli_fails_on_a_set_without_a_readable_clip(tmp_path):
    from typer.testing import CliRunner

    from unisono.cli import app

    (tmp_path / "m").mkdir()
    (tmp_path / "m/a.wav").write_bytes(b"")
    (tmp_path / "m/manifest.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "hi", "language": "en", "duration": 1.0}) + "\n")
    result = CliRunner().invoke(app, ["eval", "codec", "-m", str(tmp_path / "m"), "--no-speaker", "--threads", "1"],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 1
    assert "1 unreadable clip(s) left out, e.g. a: " in result.output and "the file is empty" in result.output
    assert "no readable clip in m" in result.output


def test_cli_refuses_a_folder_without_a_codec(tmp_path):
    from typer.testing import CliRunner

    from unisono.cli import app

    (tmp_path / "m").mkdir()
    (tmp_path / "m/manifest.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "hi", "language": "en", "duration": 1.0}) + "\n")
    result = CliRunner().invoke(app, ["eval", "codec", "-m", str(tmp_path / "m"), "--codec", str(tmp_path)],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert "no speech codec" in result.output


@pytest.mark.parametrize("option, spec, message", [
    ("--check-recognizer", "pocketsfinx", "unknown recogniser 'pocketsfinx'"),
    ("--recognizer", "faster-whisper:beam5:fallbak", "unknown option"),
])
def test_cli_refuses_an_unknown_recogniser_before_loading_anything(tmp_path, option, spec, message):
    from typer.testing import CliRunner

    from unisono.cli import app

    (tmp_path / "m").mkdir()
    (tmp_path / "m/manifest.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "hi", "language": "en", "duration": 1.0}) + "\n")
    result = CliRunner().invoke(app, ["eval", "codec", "-m", str(tmp_path / "m"), "--codec", str(tmp_path), option, spec],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert message in result.output and option in result.output and "no speech codec" not in result.output


@pytest.mark.slow
def test_cli_scores_the_shipped_codec_on_a_real_clip_and_writes_every_table(tmp_path):
    """The whole command on one real clip with the shipped codec and the bundled recogniser: the report's
    tables, readable at 80 columns, and results.json agreeing with them."""
    import shutil

    from typer.testing import CliRunner

    from tests.conftest import EXAMPLE_WAV
    from tests.codec.test_shipped import REFERENCE
    from unisono.cli import app

    (tmp_path / "m").mkdir()
    shutil.copy(EXAMPLE_WAV, tmp_path / "m/a.wav")
    (tmp_path / "m/manifest.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav", "text": REFERENCE,
                                                           "language": "en", "duration": 9.0}) + "\n")
    result = CliRunner().invoke(app, ["eval", "codec", "-m", str(tmp_path / "m"), "--no-speaker", "--threads", "1",
                                      "--report", str(tmp_path / "report")], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    for title in ("without runaway clips", "rates and latency", "WER resynth"):
        assert title in result.output
    assert "…" not in result.output  # no column cut short at 80 columns
    s = json.loads((tmp_path / "report/results.json").read_text())["sets"][0]
    assert s["loop_free_clips"] == 1 and s["wer_resynth_loop_free"] == s["wer_resynth"] < 0.2
    assert f"| m | 1 | {100 * s['wer_original']:.1f}% | {100 * s['wer_resynth']:.1f}% |" in (tmp_path / "report/README.md").read_text()
