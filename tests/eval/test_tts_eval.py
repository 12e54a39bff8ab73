"""`unisono eval tts`: prompts, systems, the measures of a clip, the report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from unisono.data import neural_voices
from unisono.eval.metrics import count_errors, mean_difference_interval
from unisono.eval.normalize import make_scoring
from unisono.eval.speech_scores import Delivery, adherence, dnsmos, measure_delivery, speech_units
from unisono.eval.tts import DEFAULT_PROMPTS, TTSPrompt, build_system, evaluate, read_prompts

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")


@pytest.fixture(scope="module")
def whisper():
    from unisono.peers.recognizers import build_recognizer

    return build_recognizer("faster-whisper", threads=2)


def test_the_repository_prompt_set_is_english_and_mandarin_with_paired_instructions():
    prompts = read_prompts(DEFAULT_PROMPTS)
    by_id = {p.id: p for p in prompts}
    assert {p.language for p in prompts} == {"en", "zh"} and len(prompts) >= 40
    instructed = [p for p in prompts if p.asked]
    assert instructed and all(by_id[p.pair_of].text == p.text and not by_id[p.pair_of].asked for p in instructed)
    assert any(p.reference for p in prompts)


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2"),
    ('{"id": "b", "text": "hi", "colour": "red"}', "unknown field"),
    ('{"id": "b", "text": "   "}', "non-empty"),
    ('{"id": "b", "text": "hi", "language": "fr"}', "language 'fr'"),
    ('{"id": "b", "text": "hi", "asked": {"rate": "slow"}}', "needs 'pair_of'"),
    ('{"id": "b", "text": "hi", "asked": {"rate": "sideways"}, "pair_of": "a"}', "rate slow|fast"),
    ('{"id": "a", "text": "again"}', "appears twice"),
    ('{"id": "b", "text": "hi", "asked": {"pitch": "low"}, "pair_of": "zz"}', "not in the file"),
    ('[1, 2]', "JSON object"),
])
def test_a_broken_prompt_row_is_named(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "text": "Hello there."}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_prompts(path)


def test_speech_units_and_adherence_by_hand():
    assert speech_units("Don't stop, it's 9 o'clock!", "en") == 5  # don't, stop, it's, 9, o'clock
    assert speech_units("今天天气很好，hello", "zh") == 6
    neutral = Delivery(2.0, 3.0, 120.0)
    slower, higher = Delivery(2.5, 2.4, 121.0), Delivery(2.0, 3.0, 120.0 * 2 ** (2 / 12))
    a = adherence({"rate": "slow", "pitch": "high"}, slower, neutral)
    assert a["rate"] == {"asked": "slow", "change": 0.8, "followed": True}
    assert a["pitch"]["followed"] is False and a["pitch"]["change"] == pytest.approx(0.1437, abs=1e-3)
    b = adherence({"rate": "fast", "pitch": "high"}, higher, neutral)
    assert b["rate"]["followed"] is False and b["pitch"] == {"asked": "high", "change": 2.0, "followed": True}
    mute = adherence({"pitch": "low"}, Delivery(0.0, 0.0, None), neutral)  # nothing to measure: not followed
    assert mute["pitch"] == {"asked": "low", "change": None, "followed": False}
    with pytest.raises(ValueError, match="rate slow|fast"):
        adherence({"volume": "loud"}, slower, neutral)


def test_mean_difference_interval_is_paired():
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.5, 60)  # prompts differ a lot; the system moves every one by +0.2 +- 0.05
    new = base + 0.2 + rng.normal(0, 0.05, 60)
    low, high = mean_difference_interval(base, new)
    assert low < 0.2 < high and high - low < 0.05  # paired: the spread between prompts does not widen it
    assert mean_difference_interval([1.0, 2.0], [1.5, 2.5]) == (0.5, 0.5)
    assert all(np.isnan(mean_difference_interval([1.0], [2.0])))
    with pytest.raises(ValueError, match="shape"):
        mean_difference_interval([1.0, 2.0], [1.0])


@needs_espeak
def test_delivery_measures_rate_and_pitch_of_real_speech():
    from unisono.data.engines import Voice, render

    voice, text = Voice("espeak-ng", "en-us", "en"), "The children played in the garden after school."
    slow, fast = (measure_delivery(render(voice, text, {"wpm": w, "pitch": 50}), text, "en") for w in (120, 220))
    assert 1.5 < fast.rate / slow.rate < 2.2 and 2.0 < slow.rate < 3.5  # words a second
    low, high = (measure_delivery(render(voice, text, {"wpm": 175, "pitch": p}), text, "en") for p in (20, 80))
    assert high.f0_median_hz > low.f0_median_hz * 1.2


@needs_espeak
def test_dnsmos_prefers_speech_to_noise():
    from unisono.data.engines import Voice, render

    speech = render(Voice("espeak-ng", "en-us", "en"), "Please close the door when you leave.", {"wpm": 175, "pitch": 50})
    noise = np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32)
    clean, noisy = dnsmos(speech), dnsmos(speech + noise[: len(speech)] if len(speech) <= 32000 else speech)
    assert set(clean) == {"ovrl", "sig", "bak", "p808"} and all(1.0 <= v <= 5.0 for v in clean.values())
    assert clean["bak"] > noisy["bak"] + 0.5 and clean["ovrl"] > dnsmos(noise)["ovrl"] + 0.5
    assert 1.0 <= dnsmos(speech[:1000])["ovrl"] <= 5.0  # a clip under half a second is padded, not refused


@needs_espeak
def test_a_peer_is_scored_clip_by_clip_and_follows_its_instructions(whisper):
    prompts = [TTSPrompt("a", "Turn left at the next corner."),
               TTSPrompt("b", "Turn left at the next corner.", instruct="Speak quickly.", asked={"rate": "fast"}, pair_of="a"),
               TTSPrompt("c", "Turn left at the next corner.", instruct="Speak with a high voice.", asked={"pitch": "high"},
                         pair_of="a", reference="lj"),
               TTSPrompt("z", "今天天气很好。", language="zh")]
    result = evaluate(build_system("espeak-ng"), prompts, [whisper], use_dnsmos=False)
    en = make_scoring("en")
    assert [i["id"] for i in result.items] == ["a", "b", "c", "z"]
    for item in result.items[:3]:  # each count is the edit distance of its own text and hypothesis
        hyp = item["hypotheses"][whisper.name]
        assert count_errors(en.normalize(item["text"]), en.normalize(hyp), "word").to_dict() == item["counts"][whisper.name]
    assert result.items[3]["counts"] == {}  # tiny.en does not hear Mandarin
    assert result.items[1]["adherence"]["rate"]["followed"] and result.items[2]["adherence"]["pitch"]["followed"]
    assert result.items[2]["similarity"] is None  # no speaker encoder given
    summary = result.summary([whisper.name])
    assert summary["adherence"] == (2, 2) and summary["wer_en " + whisper.name] < 0.3 and summary["ended"] is None

    flite = evaluate(build_system("flite"), prompts[:1] + prompts[3:], [whisper], use_dnsmos=False)
    assert [s["id"] for s in flite.skipped] == ["z"] and "does not speak zh" in flite.skipped[0]["reason"]


def test_unknown_systems_are_named():
    with pytest.raises(ValueError, match="unknown TTS system 'espeak'"):
        build_system("espeak")
    with pytest.raises(ValueError, match="unknown TTS system 'piper:loud'"):
        build_system("piper:loud")


@pytest.mark.slow
def test_unisono_streams_and_reports_its_guard(whisper):
    result = evaluate(build_system("unisono"), [TTSPrompt("a", "Turn left.", reference="lj")], [whisper],
                      use_dnsmos=False, seed=3)
    item = result.items[0]
    assert item["audio_s"] > 0 and 0 < item["first_audio_s"] <= item["seconds"] and item["ended"] in (True, False)


@pytest.mark.slow
@needs_espeak
def test_the_command_writes_its_report(tmp_path):
    from typer.testing import CliRunner

    from unisono.eval.cli import app

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "e1", "text": "Please close the door."}\n'
                       '{"id": "e2", "text": "Please close the door.", "instruct": "Speak slowly.", "asked": {"rate": "slow"}, "pair_of": "e1"}\n'
                       '{"id": "z1", "text": "请把门关上。", "language": "zh"}\n')
    runner = CliRunner(env={"COLUMNS": "300"})
    out = runner.invoke(app, ["tts", "--systems", "espeak-ng,flite", "--prompts", str(prompts), "--recognizers",
                                   "faster-whisper", "--no-speaker", "-r", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [s["name"] for s in results["systems"]] == ["espeak-ng", "flite"]
    assert results["systems"][1]["skipped"] == 1 and results["systems"][0]["adherence"] == [1, 1]
    readme = (tmp_path / "r" / "README.md").read_text()
    assert "| espeak-ng |" in readme and "flite − espeak-ng, en" in readme and "spectrograms.png" in readme
    assert (tmp_path / "r" / "spectrograms.png").stat().st_size > 10_000
    assert (tmp_path / "r" / "audio" / "flite" / "e1.wav").is_file()

    prompts.write_text('{"id": "e1", "text": ""}\n')
    bad = runner.invoke(app, ["tts", "--prompts", str(prompts)])
    assert bad.exit_code == 2 and "line 1: 'text' must be a non-empty string" in " ".join(bad.output.split())
    bad = runner.invoke(app, ["tts", "--systems", "nope"])
    assert bad.exit_code == 2 and "unknown TTS system" in " ".join(bad.output.split())


@pytest.mark.skipif(bool(neural_voices.missing("piper", "en")), reason="needs piper (pip install -e '.[voices]')")
def test_piper_is_a_peer():
    system = build_system("piper")
    assert system.languages == ("en",)
