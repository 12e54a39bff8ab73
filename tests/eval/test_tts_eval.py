"""`unisono eval tts`: systems speak, one recogniser scores them."""

from __future__ import annotations

import json

import pytest

from unisono.data import neural_voices
from unisono.eval.metrics import count_errors
from unisono.eval.normalize import make_scoring
from unisono.eval.tts import DEFAULT_SENTENCES, evaluate


@pytest.fixture(scope="module")
def whisper():
    from unisono.peers.recognizers import build_recognizer

    return build_recognizer("faster-whisper", threads=2)


@pytest.mark.slow
@pytest.mark.skipif(bool(neural_voices.missing("piper", "en")), reason="needs piper (pip install -e '.[voices]')")
def test_a_real_tts_is_heard_and_scores_add_up(whisper):
    piper = evaluate("piper", DEFAULT_SENTENCES[:3], whisper)
    assert piper.wer < 0.15 and piper.ended is None and 0 < piper.rtf < 1
    en = make_scoring("en")
    for item in piper.items:  # each count is the edit distance of its own sentence and hypothesis
        assert count_errors(en.normalize(item["sentence"]), en.normalize(item["hypothesis"]), "word").to_dict() == item["counts"]
    ours = evaluate("unisono", DEFAULT_SENTENCES[:1], whisper, seed=3)
    assert ours.name == "unisono" and ours.items[0]["audio_s"] > 0 and ours.ended in (0, 1)


def test_unknown_systems_are_named(whisper):
    with pytest.raises(ValueError, match="unknown TTS system 'espeak'"):
        evaluate("espeak", DEFAULT_SENTENCES[:1], whisper)


@pytest.mark.slow
@pytest.mark.skipif(bool(neural_voices.missing("piper", "en")), reason="needs piper")
def test_the_command_writes_its_report(tmp_path):
    from typer.testing import CliRunner

    from unisono.eval.cli import app

    out = CliRunner().invoke(app, ["tts", "--systems", "piper", "--limit", "2", "-r", str(tmp_path)])
    assert out.exit_code == 0, out.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["systems"][0]["name"] == "piper" and len(results["systems"][0]["items"]) == 2
    assert "--limit 2" in results["command"]
    bad = CliRunner().invoke(app, ["tts", "--systems", "nope"])
    assert bad.exit_code == 2 and "unknown TTS system" in bad.output
