"""ASR mode on real speech with a tiny random model: MTP == greedy, batching, long files, formats."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from tests.conftest import make_tiny_model

from unisono.audio.io import AudioWarning, EmptyAudioError, InvalidAudioError, load_audio
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


# ---- defects found by trying the project as a new user -----------------------------------------
def test_an_int_is_refused_not_opened_as_a_file_descriptor(model):
    for wrong in (0, 2, [1, "x"]):
        with pytest.raises(TypeError, match="path, bytes, a binary file object or a 16 kHz float array"):
            model.transcribe(wrong)


def test_bad_options_are_refused_in_words(model, clips):
    for kwargs, match in [({"batch_size": 0}, "batch_size"), ({"batch_size": -1}, "batch_size"),
                          ({"n_drafts": 0}, "n_drafts"), ({"n_drafts": 99}, "n_drafts"), ({"max_new_tokens": 0}, "max_new_tokens")]:
        with pytest.raises(ValueError, match=match):
            model.transcribe(clips[0], **kwargs)


def test_a_short_clip_is_decoded_around_its_speech_only(model, real_speech_dir):
    """A clip under 30 s that is mostly silence: the silence is not decoded (a model reads words into it)."""
    speech = load_audio(real_speech_dir / "ljspeech_lj001" / "wav" / "LJ001-0002.wav")  # 1.9 s
    clip = np.concatenate([np.zeros(16000 * 20, np.float32), speech, np.zeros(16000 * 5, np.float32)])
    t = model.transcribe(clip, max_new_tokens=12)
    (seg,) = t.segments
    assert 19.0 <= seg.start <= 20.0 and 21.9 <= seg.end <= 22.9  # the speech, with half a second of margin
    excerpt = clip[int(seg.start * 16000) : int(seg.end * 16000)]
    assert t.text == model.transcribe(excerpt, max_new_tokens=12).text
    assert t.duration == pytest.approx(len(clip) / 16000)


def test_quiet_speech_is_raised_and_warned(model, clips):
    from unisono.audio.level import adjust_level

    speech = load_audio(clips[0])
    quiet = (speech / np.abs(speech).max() * 10 ** (-70 / 20)).astype(np.float32)  # silero-vad hears nothing at -70 dBFS
    with pytest.warns(AudioWarning, match="quiet"):
        t = model.transcribe(quiet, max_new_tokens=12)
    assert any("quiet" in w and "-70 dBFS" in w for w in t.warnings)
    assert t.segments and t.stats.passes > 0  # decoded, not dropped as silence
    assert t.text == model.transcribe(adjust_level(quiet).audio, max_new_tokens=12).text
    assert "quiet" in json.loads(FORMATS["json"](t))["warnings"][0]


def test_silence_gets_an_empty_transcript_and_a_warning(model):
    with pytest.warns(AudioWarning, match="silent"):
        t = model.transcribe(np.zeros(16000 * 3, np.float32), max_new_tokens=4)
    assert t.text == "" and t.stats.passes == 0 and any("silent" in w for w in t.warnings)
    noise = (0.01 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32)
    with pytest.warns(AudioWarning, match="no speech"):
        t = model.transcribe(noise, max_new_tokens=4)
    assert t.text == "" and any("no speech" in w for w in t.warnings)


@pytest.mark.slow
def test_a_long_file_of_real_clips_decodes_with_mtp(real_speech_dir):
    """LJ001-0024..0031 joined end to end (58 s). The embedded model loops on one of its segments up to
    the token limit while the segments batched with it finish early: MTP decoding crashed there
    (RuntimeError: index out of bounds in decode/propose.py) where greedy decoding did not."""
    from unisono.model.unisono import Unisono, default_model_path

    model = Unisono.load(default_model_path())
    wav = real_speech_dir / "ljspeech_lj001" / "wav"
    long = np.concatenate([load_audio(wav / f"LJ001-{i:04d}.wav") for i in range(24, 32)])
    t = model.transcribe(long, batch_size=8)
    assert len(t.segments) >= 2 and all(s.text for s in t.segments)
    assert t.stats.tokens_per_pass > 1.0  # drafts were accepted


def test_scheduled_transcripts_equal_batched_and_deltas_add_up(model, clips, example_wav):
    from unisono.decode.scheduler import Scheduler

    a = load_audio(example_wav)
    long = np.concatenate([a, np.zeros(16000, np.float32)] * 4)  # several pieces, with timestamps
    inputs = [*clips, long]
    batched = model.transcribe(inputs, max_new_tokens=12)
    deltas: dict[int, list[str]] = {}
    with Scheduler(model) as scheduler:
        scheduled = model.transcribe(inputs, max_new_tokens=12, scheduler=scheduler,
                                     on_delta=lambda i, d: deltas.setdefault(i, []).append(d))
        deadline = time.time() + 10  # finished requests leave the batch at the scheduler's next pass
        while scheduler.running and time.time() < deadline:
            time.sleep(0.01)
        assert scheduler.running == 0
    assert [t.text for t in scheduled] == [t.text for t in batched]
    assert [[(s.start, s.end, s.text) for s in t.segments] for t in scheduled] == \
        [[(s.start, s.end, s.text) for s in t.segments] for t in batched]
    for i, t in enumerate(scheduled):
        assert "".join(deltas.get(i, [])) == t.text
    assert len(deltas[len(inputs) - 1]) > 1  # streamed in pieces, not once at the end
    assert sum(t.stats.passes for t in scheduled) > 0


def test_a_piece_that_fails_to_decode_leaves_the_others(model, clips, monkeypatch):
    from unisono.decode.session import Session

    alone = [model.transcribe(c, max_new_tokens=10).text for c in clips]
    planned = Session.plan
    victim = {}

    def plan(self):  # the second clip's session breaks mid-decoding
        if self.config.max_new_tokens == 10 and not victim:
            victim["session"] = self
        if self is victim.get("session") and len(self.output) >= 2:
            raise IndexError("index 767 is out of bounds")
        return planned(self)

    monkeypatch.setattr(Session, "plan", plan)
    with pytest.warns(AudioWarning, match="failed"):
        out = model.transcribe(clips, max_new_tokens=10, batch_size=1)
    broken = [i for i, t in enumerate(out) if any("failed" in w for w in t.warnings)]
    assert len(broken) == 1
    assert [t.text for i, t in enumerate(out) if i not in broken] == [a for i, a in enumerate(alone) if i not in broken]
    assert "index 767" in out[broken[0]].warnings[-1]
