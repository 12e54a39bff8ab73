"""Corpus statistics: augmentation and duration breakdowns against counts made by hand."""

from __future__ import annotations

import math
from pathlib import Path

from unisono.data.index import MetadataIndex
from unisono.data.manifest import Utterance
from unisono.data.stats import augmentation_hours, duration_histogram, plot_stats


def _utts() -> list[Utterance]:
    return [
        Utterance("a", "a.flac", "t", "en", 3.6, meta={"engine": "flite", "tier": "synthetic", "augment": []}),
        Utterance("b", "b.flac", "t", "en", 7.2, meta={"engine": "flite", "tier": "synthetic",
                                                     "augment": [{"kind": "noise"}, {"kind": "gain"}]}),
        Utterance("c", "c.flac", "t", "zh", 1.8, meta={"engine": "espeak-ng", "tier": "synthetic",
                                                     "augment": [{"kind": "noise"}]}),
        Utterance("d", "d.flac", "t", "zh", 2.5, meta={"tier": "gold"}),  # real speech: no augment list
    ]


def test_augmentation_hours() -> None:
    with MetadataIndex() as ix:
        ix.add(_utts(), root=".", corpus="c")
        rows = {(r["kind"], r["language"]): (r["clips"], r["hours"]) for r in augmentation_hours(ix)}
    assert set(rows) == {("clean", "en"), ("noise", "en"), ("gain", "en"), ("noise", "zh")}
    assert rows[("clean", "en")][0] == 1 and math.isclose(rows[("clean", "en")][1], 3.6 / 3600)
    assert rows[("noise", "zh")] == (1, 1.8 / 3600)


def test_duration_histogram_and_plot(tmp_path: Path) -> None:
    with MetadataIndex() as ix:
        ix.add(_utts(), root=".", corpus="c")
        hist = {(r["language"], r["bin_start_s"]): r["clips"] for r in duration_histogram(ix, bin_s=2.0)}
        assert hist == {("en", 2.0): 1, ("en", 6.0): 1, ("zh", 0.0): 1, ("zh", 2.0): 1}
        png = plot_stats(ix, tmp_path / "p.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
