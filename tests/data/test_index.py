"""DuckDB index: hours and selections checked against sums computed in Python."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from unisono.data.index import MetadataIndex
from unisono.data.manifest import Utterance, read_manifest, write_manifest


def _corpus(n: int = 60, seed: int = 0) -> list[Utterance]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lang = rng.choice(["en", "zh"])
        meta = {"engine": rng.choice(["espeak-ng", "flite", "festival"]), "voice": f"v{rng.randint(0, 3)}",
                "tier": rng.choice(["gold", "silver", "bronze"]), "quality": rng.random(), "synthetic": True,
                "scores": {"snr_db": rng.uniform(0, 30)}}
        out.append(Utterance(f"u{i:03d}", f"wav/u{i:03d}.flac", "text", lang, rng.uniform(0.5, 20.0),
                             meta["voice"], f"debian:pkg:/f#{i}", meta))
    return out


@pytest.fixture()
def index(tmp_path: Path):
    write_manifest(tmp_path / "synth" / "manifest.jsonl", _corpus())
    with MetadataIndex(tmp_path / "index.duckdb") as ix:
        ix.add_manifest(tmp_path / "synth")
        yield ix


def test_hours_by_matches_python_sums(index: MetadataIndex) -> None:
    utts = _corpus()
    rows = index.hours_by("language", "tier")
    assert len(rows) == len({(u.language, u.meta["tier"]) for u in utts})
    for r in rows:
        expect = [u.duration for u in utts if u.language == r["language"] and u.meta["tier"] == r["tier"]]
        assert r["clips"] == len(expect)
        assert math.isclose(r["hours"], sum(expect) / 3600)
    assert [r["hours"] for r in rows] == sorted((r["hours"] for r in rows), reverse=True)
    assert math.isclose(index.total_hours(), sum(u.duration for u in utts) / 3600)
    assert index.hours_by("origin")[0]["origin"] == "debian"


def test_select_filters(index: MetadataIndex, tmp_path: Path) -> None:
    utts = _corpus()
    rows = index.select(language="en", tier=["gold", "silver"], min_duration=2.0, max_duration=10.0, min_quality=0.2)
    expect = sorted(u.id for u in utts if u.language == "en" and u.meta["tier"] in ("gold", "silver")
                    and 2.0 <= u.duration <= 10.0 and u.meta["quality"] >= 0.2)
    assert [r["id"] for r in rows] == expect
    assert all(Path(r["audio"]).is_absolute() and r["audio"].startswith(str(tmp_path)) for r in rows)
    assert rows[0]["meta"]["engine"] == rows[0]["engine"] and "snr_db" in rows[0]["scores"]
    assert len(index.select(limit=5)) == 5
    assert [u.id for u in index.utterances(language="en", tier=["gold", "silver"], min_duration=2.0,
                                           max_duration=10.0, min_quality=0.2)] == expect


def test_readding_replaces_not_duplicates(index: MetadataIndex, tmp_path: Path) -> None:
    index.add_manifest(tmp_path / "synth")
    assert index.count() == 60
    index.add_manifest(tmp_path / "synth", corpus="copy")
    assert index.count() == 120
    assert {r["corpus"] for r in index.hours_by("corpus")} == {"synth", "copy"}


def test_bad_group_column_is_refused(index: MetadataIndex) -> None:
    with pytest.raises(ValueError, match="cannot group by"):
        index.hours_by("duration; DROP TABLE utterances")


def test_persisted_and_real_manifest(tmp_path: Path, real_speech_dir: Path) -> None:
    db = tmp_path / "ix.duckdb"
    with MetadataIndex(db) as ix:
        n = ix.add_manifest(real_speech_dir / "aishell_sample_zh")
    with MetadataIndex(db, read_only=True) as ix:
        assert ix.count() == n == len(read_manifest(real_speech_dir / "aishell_sample_zh"))
        assert ix.hours_by("language")[0]["language"] == "zh"
        assert ix.select(engine="espeak-ng") == []  # real speech has no engine
    with MetadataIndex(db) as ix:
        out = ix.to_parquet(tmp_path / "ix.parquet")
    import pyarrow.parquet as pq
    assert pq.read_table(out).num_rows == n
