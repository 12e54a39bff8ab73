"""ASR mode on real speech with a tiny random model: MTP == greedy, batching, long files, formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.conftest import make_tiny_model

from unisono.audio.io import EmptyAudioError, InvalidAudioError, load_audio
from unisono.modes.asr import FORMATS, MAX_SEGMENT_S, split_long


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer, "qwen3", seed=3).double()


@pytest.fixture(scope="module")
def clips(real_speech_dir):
    base = real_speech_dir / "an4_test"
    rows = [json.loads(line) for line in (base / "manifest.jsonl").read_text().splitlines()[:3]]
    return [base / r["audio"] for r in rows]


def test_mtp_output_equals_greedy_on_real_speech(model, clips):
    greedy = model.transcribe(clips, mtp=False, max_new_tokens=20)
    fast = model.transcribe(clips, mtp=True, max_new_tokens=20)
    assert [t.text for t in fast] == [t.text for t in greedy]
    assert all(t.stats.tokens_per_pass == 1.0 for t in greedy)
    assert sum(t.stats.passes for t in fast) <= sum(t.stats.passes for t in greedy)


def test_batched_equals_one_at_a_time(model, clips):
    together = model.transcribe(clips, batch_size=3, max_new_tokens=16)
    for path, t in zip(clips, together):
        alone = model.transcribe(path, batch_size=1, max_new_tokens=16)
        assert alone.text == t.text
        assert alone.source == str(path) and t.duration == pytest.approx(alone.duration)


def test_arrays_paths_and_bytes_agree(model, clips):
    path = clips[0]
    from_path = model.transcribe(path, max_new_tokens=12).text
    assert model.transcribe(load_audio(path), max_new_tokens=12).text == from_path
    assert model.transcribe(path.read_bytes(), max_new_tokens=12).text == from_path


def test_long_file_is_split_with_timestamps(model, example_wav):
    a = load_audio(example_wav)
    long = np.concatenate([a, np.zeros(16000, np.float32)] * 4)  # ~43 s
    spans = split_long(long)
    assert len(spans) >= 2 and all(e - s <= MAX_SEGMENT_S for s, e in spans)
    t = model.transcribe(long, max_new_tokens=8)
    assert t.duration == pytest.approx(len(long) / 16000)
    assert len(t.segments) >= 2
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts) and t.segments[-1].end <= t.duration + 1e-6
    srt = FORMATS["srt"](t)
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    doc = json.loads(FORMATS["json"](t))
    assert doc["duration"] == pytest.approx(t.duration, abs=1e-3) and len(doc["segments"]) == len(t.segments)
    assert FORMATS["vtt"](t).startswith("WEBVTT")


def test_short_file_is_one_segment(model, example_wav):
    t = model.transcribe(example_wav, max_new_tokens=8)
    assert len(t.segments) == 1 and t.segments[0].start == 0.0
    assert t.segments[0].end == pytest.approx(t.duration, abs=1e-3)


def test_silence_and_noise_are_not_decoded(model, example_wav):
    rng = np.random.default_rng(0)
    for quiet in (np.zeros(16000, np.float32), (0.01 * rng.standard_normal(48000)).astype(np.float32)):
        t = model.transcribe(quiet, max_new_tokens=4)
        assert t.text == "" and t.segments == [] and t.stats.passes == 0  # nothing for the model to read words into
        assert FORMATS["srt"](t) == "" and json.loads(FORMATS["json"](t))["text"] == ""
    speech = load_audio(example_wav)
    assert split_long(speech) == [(0.0, len(speech) / 16000)]  # a short file with speech is decoded whole
    long_silence = np.zeros(16000 * 40, np.float32)
    t = model.transcribe(long_silence, max_new_tokens=4)
    assert t.text == "" and t.duration == pytest.approx(40.0)


def test_bad_arrays_are_refused(model):
    with pytest.raises(EmptyAudioError):
        model.transcribe(np.zeros(0, np.float32))
    with pytest.raises(InvalidAudioError, match="NaN"):
        model.transcribe(np.full(1600, np.nan, np.float32))
    with pytest.raises(InvalidAudioError, match="1-D"):
        model.transcribe(np.zeros((2, 1600), np.float32))
