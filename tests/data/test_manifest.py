"""Manifests: round trips (JSONL, Parquet), real manifests load unchanged, torn and bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import read_manifest as read_raw
from unisono.data.manifest import (
    ManifestError,
    ManifestWriter,
    Rejection,
    Utterance,
    read_manifest,
    read_parquet,
    read_rejections,
    write_manifest,
    write_parquet,
)


def _utts() -> list[Utterance]:
    return [
        Utterance("a", "wav/a.flac", "twenty five cats", "en", 1.5, "en-us+m3", "debian:fortunes:/x#1",
                  {"engine": "espeak-ng", "augment": [{"kind": "noise", "snr_db": 12.5}], "quality": 0.9}),
        Utterance("b", "wav/b.flac", "你好世界", "zh", 2.0),
    ]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "manifest.jsonl", _utts())
    assert read_manifest(path) == _utts()
    assert read_manifest(tmp_path) == _utts()  # a folder means its manifest.jsonl
    # Chinese stays readable in the file.
    assert "你好世界" in path.read_text(encoding="utf-8")


def test_parquet_round_trip(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "m.parquet", _utts())
    assert read_parquet(path) == _utts()


@pytest.mark.parametrize("name", ["an4_test", "ljspeech_lj001", "aishell_sample_zh"])
def test_real_manifests_load_unchanged(real_speech_dir: Path, name: str) -> None:
    path = real_speech_dir / name / "manifest.jsonl"
    raw = read_raw(path)
    utts = read_manifest(path)
    assert len(utts) == len(raw)
    for u, d in zip(utts, raw):
        assert (u.id, u.audio, u.text, u.language, u.duration, u.speaker, u.source) == (
            d["id"], d["audio"], d["text"], d["language"], d["duration"], d["speaker"], d.get("source"))
        # Extra keys such as text_raw survive in meta.
        for k in set(d) - {"id", "audio", "text", "language", "duration", "speaker", "source"}:
            assert u.meta[k] == d[k]
        assert u.audio_path(path.parent).is_file()


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    good = json.dumps(_utts()[0].to_dict())
    path.write_text(good + "\n{not json\n" + good + "\n")
    with pytest.raises(ManifestError, match=r"manifest.jsonl:2: not valid JSON"):
        read_manifest(path)


@pytest.mark.parametrize("line, message", [
    ({"id": "x", "audio": "a.wav", "text": "t", "language": "en"}, "missing field"),
    ({"id": "x", "audio": "a.wav", "text": "t", "language": "en", "duration": "long"}, "not a number"),
    ({"id": "x", "audio": "a.wav", "text": "t", "language": "en", "duration": -1}, "negative"),
    ([1, 2], "expected a JSON object"),
])
def test_invalid_records(tmp_path: Path, line, message: str) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_torn_tail_is_refused_then_skipped_then_cut_by_writer(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    first, second = _utts()
    path.write_text(json.dumps(first.to_dict()) + "\n" + json.dumps(second.to_dict())[:17])
    with pytest.raises(ManifestError):
        read_manifest(path)
    assert read_manifest(path, skip_partial_tail=True) == [first]
    # Resuming cuts the torn record and appends whole lines after the last good one.
    with ManifestWriter(path) as w:
        w.write(second)
    assert read_manifest(path) == [first, second]


def test_writer_appends_and_rejections_round_trip(tmp_path: Path) -> None:
    with ManifestWriter(tmp_path / "rejected.jsonl") as w:
        w.write(Rejection("x", "synth", "EmptyAudioError: no samples", "x.txt"))
    with ManifestWriter(tmp_path / "rejected.jsonl") as w:
        w.write(Rejection("y", "augment", "boom"))
    assert [r.id for r in read_rejections(tmp_path)] == ["x", "y"]
    assert read_rejections(tmp_path / "missing") == []


def test_replace_copies_meta() -> None:
    u = _utts()[0]
    v = u.replace(id="a_sp1.1")
    v.meta["tier"] = "gold"
    assert "tier" not in u.meta and v.id == "a_sp1.1"
