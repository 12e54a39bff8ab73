"""Manifests and the evaluation run: scoring, unreadable files, failing systems, languages, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unisono.eval.asr import RunResult, append_result, evaluate, load_clips, load_results
from unisono.eval.manifest import ManifestError, load_set
from unisono.eval.metrics import count_errors
from unisono.eval.normalize import make_scoring
from unisono.eval.speed import SpeedConfig
from unisono.peers.recognizers import Recognizer, TranscriptionError


class Scripted(Recognizer):
    """Answers by clip length (each test clip has its own), fails where told; counts its calls."""

    kind = "scripted"

    def __init__(self, answers: dict[int, str], fail: set[int] = frozenset(), languages=None):
        self.name, self.spec, self.threads = "scripted", "scripted", 1
        self.answers, self.fail, self.languages, self.calls = answers, fail, languages, 0

    def transcribe(self, audio, language=None):
        self.calls += 1
        if len(audio) in self.fail:
            raise TranscriptionError("server said no")
        return self.answers[len(audio)]


def write_set(folder: Path, rows: list[dict], language: str = "en") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, r in enumerate(rows):
        if "samples" in r:
            sf.write(folder / f"u{i}.wav", np.random.default_rng(i).normal(0, 0.1, r["samples"]).astype(np.float32), 16000)
        elif "bytes" in r:
            (folder / f"u{i}.wav").write_bytes(r["bytes"])
        lines.append(json.dumps({"id": f"u{i}", "audio": f"u{i}.wav", "text": r["text"], "language": language, "duration": 1.0}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def toy_set(tmp_path):
    return write_set(tmp_path / "toy", [
        {"samples": 16000, "text": "Hello, world!"},
        {"samples": 24000, "text": "fourteen sixty-five"},
        {"samples": 8000, "text": "one two three"},
        {"bytes": b"this is not audio", "text": "lost"},
        {"text": "missing file"},  # no file written
    ])


# ---- manifests ------------------------------------------------------------------------------
def test_manifest_by_folder_or_file(toy_set):
    by_folder, by_file = load_set(toy_set), load_set(toy_set / "manifest.jsonl")
    assert by_folder == by_file and by_folder.name == "toy" and len(by_folder.utterances) == 5
    assert by_folder.utterances[0].audio.is_absolute() and by_folder.language == "en"
    assert len(by_folder.head(2).utterances) == 2 and by_folder.head(None) is by_folder
    (toy_set / "dev.jsonl").write_text((toy_set / "manifest.jsonl").read_text())
    assert load_set(toy_set / "dev.jsonl").name == "dev"


def test_data_engine_parquet_manifest(toy_set):
    from unisono.data.manifest import read_manifest, write_parquet

    write_parquet(toy_set / "toy.parquet", read_manifest(toy_set))
    s = load_set(toy_set / "toy.parquet")
    assert s.name == "toy" and [u.audio for u in s.utterances] == [u.audio for u in load_set(toy_set).utterances]


def test_real_speech_manifests_load(real_speech_dir):
    for name, lang, n in [("an4_test", "en", 130), ("ljspeech_lj001", "en", 32), ("aishell_sample_zh", "zh", 300)]:
        s = load_set(real_speech_dir / name)
        assert (s.name, s.language, len(s.utterances)) == (name, lang, n)
        assert all(u.audio.is_file() for u in s.utterances[:5])


ROW = '"audio": "a.wav", "text": "x", "language": "en", "duration": 1.0'


@pytest.mark.parametrize("content, match", [
    ('{"id": "a", %s}\n{"id": "b", "audio": \n' % ROW, r"manifest.jsonl:2: not valid JSON"),
    ('{"id": "a", "audio": "a.wav"}\n', "missing field"),
    ('["a.wav", "x"]\n', "expected a JSON object"),
    ('{"id": "a", %s}\n{"id": "a", %s}\n' % (ROW, ROW), "duplicate id 'a'"),
    ("\n\n", "holds no utterances"),
])
def test_bad_manifests_say_where(tmp_path, content, match):
    (tmp_path / "manifest.jsonl").write_text(content)
    with pytest.raises(ManifestError, match=match):
        load_set(tmp_path)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="without manifest.jsonl"):
        load_set(tmp_path)
    with pytest.raises(ManifestError, match="no manifest"):
        load_set(tmp_path / "nope.jsonl")


# ---- a run ----------------------------------------------------------------------------------
def test_evaluate_scores_times_and_survives_bad_input(toy_set):
    loaded = load_clips(load_set(toy_set))
    assert set(loaded.unreadable) == {"u3", "u4"} and len(loaded.clips) == 3  # listed, not fatal
    system = Scripted({16000: "hello world", 24000: "1465", 8000: "won two three"}, fail={8000})
    scoring = make_scoring("en")
    r = evaluate(system, loaded, scoring, SpeedConfig(repeats=2, warmup=1))
    assert system.calls == 1 + 2 * 3
    assert [u.id for u in r.utterances] == ["u0", "u1", "u2"] and r.clips == 3
    assert r.utterances[1].counts.errors == 0  # "fourteen sixty-five" == "1465" once normalised
    failed = r.utterances[2]
    assert failed.error == "server said no" and failed.hypothesis == ""  # scored as nothing recognised
    assert failed.counts == count_errors(scoring.normalize("one two three"), "", "word")
    # "one two three" normalises to the single word "123": references hold 2 + 1 + 1 words
    assert r.failures == 1 + 2 and r.counts.deletions == 1 and r.counts.reference_length == 4  # + the 2 unreadable
    assert r.rate == pytest.approx(1 / 4)
    assert r.audio_seconds == pytest.approx(3.0) and len(r.repeat_seconds) == 2
    assert r.rtf > 0 and math.isfinite(r.rtf) and r.unreadable.keys() == {"u3", "u4"}


def test_unsupported_language_is_marked_not_run(tmp_path):
    zh = write_set(tmp_path / "zh", [{"samples": 16000, "text": "今天天气很好"}], language="zh")
    loaded = load_clips(load_set(zh))
    english_only = Scripted({16000: "today"}, languages=frozenset({"en"}))
    r = evaluate(english_only, loaded, make_scoring("zh"), SpeedConfig(repeats=1))
    assert not r.supported and english_only.calls == 0 and r.utterances == []
    r = evaluate(english_only, loaded, make_scoring("zh"), SpeedConfig(repeats=1), run_unsupported=True)
    assert r.supported and r.rate == pytest.approx(1.0)  # "today" against 6 characters: 5 S + 1 D


def test_results_round_trip_and_torn_lines(toy_set, tmp_path):
    loaded = load_clips(load_set(toy_set))
    r = evaluate(Scripted({16000: "a", 24000: "b", 8000: "c"}), loaded, make_scoring("en"), SpeedConfig(repeats=1, warmup=0))
    path = tmp_path / "out" / "results.jsonl"
    append_result(path, r)
    with open(path, "a") as f:
        f.write('{"set_name": "toy", "manifest": "x", "utter')  # a killed run's last line
    back = load_results(path)
    assert len(back) == 1 and back[0].to_dict() == r.to_dict() and back[0].key == r.key
    assert RunResult.from_dict(json.loads(json.dumps(r.to_dict()))).counts == r.counts
    assert load_results(tmp_path / "absent.jsonl") == []


def test_a_crashing_system_loses_one_clip_not_the_run(toy_set):
    class Crashy(Scripted):
        def transcribe(self, audio, language=None):
            if len(audio) == 24000:
                raise RuntimeError("index out of range")
            return super().transcribe(audio, language)

    r = evaluate(Crashy({16000: "hello world", 8000: "123"}), load_clips(load_set(toy_set)), make_scoring("en"), SpeedConfig(repeats=1, warmup=0))
    assert [u.error for u in r.utterances] == [None, "RuntimeError: index out of range", None]
    assert r.failures == 1 + 2 and r.counts.deletions == 1 and r.counts.hits == 3


def test_a_set_without_readable_audio_has_no_rate(tmp_path):
    broken = write_set(tmp_path / "broken", [{"bytes": b"RIFF....", "text": "x"}])
    r = evaluate(Scripted({}), load_clips(load_set(broken)), make_scoring("en"), SpeedConfig(repeats=1))
    assert r.clips == 0 and math.isnan(r.rate) and list(r.unreadable) == ["u0"]


def test_a_null_reference_is_refused_not_scored_as_empty(tmp_path):
    folder = write_set(tmp_path / "nulls", [{"samples": 16000, "text": "hello"}, {"samples": 16000, "text": None}])
    with pytest.raises(ManifestError, match=r"manifest.jsonl:2: .*'u1'.* null"):
        load_set(folder)


def test_clips_whose_audio_is_missing_count_as_failures(toy_set):
    loaded = load_clips(load_set(toy_set))  # u3 is not audio, u4 has no file
    r = evaluate(Scripted({16000: "hello world", 24000: "1465", 8000: "one two three"}), loaded, make_scoring("en"),
                 SpeedConfig(repeats=1, warmup=0))
    assert all(u.error is None for u in r.utterances)  # the system itself never failed
    assert r.failures == 2 and sorted(r.unreadable) == ["u3", "u4"]
    back = RunResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.failures == 2
