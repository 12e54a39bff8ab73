"""Reports: the tables carry the run's numbers, markdown is well formed, plots are real PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest

from unisono.decode.stats import DecodeStats
from unisono.eval.asr import RunResult, UtteranceResult
from unisono.eval.metrics import count_errors
from unisono.eval.mtp import MTPResult
from unisono.eval.report import (
    NOT_SUPPORTED,
    Table,
    asr_tables,
    set_table,
    summary_table,
    write_asr_report,
    write_mtp_report,
)

PNG = b"\x89PNG\r\n\x1a\n"


def run(system: str, set_name: str, pairs, seconds: list[float], audio: float, stats: DecodeStats | None = None, supported=True, unit="word"):
    utts = [UtteranceResult(f"u{i}", 1.0, r, h, r, h, count_errors(r, h, unit), 0.1) for i, (r, h) in enumerate(pairs)]
    return RunResult(set_name=set_name, manifest=f"{set_name}/manifest.jsonl", language="en", system=system, spec=system,
                     scoring="en" if unit == "word" else "zh", unit=unit, threads=1, repeats=len(seconds), warmup=1, limit=None,
                     supported=supported, utterances=utts if supported else [], repeat_seconds=seconds, clips=len(pairs),
                     audio_seconds=audio, decode_stats=stats.to_dict() if stats else None)


@pytest.fixture
def results():
    stats = DecodeStats(n_branches=3)
    for k in (3, 3, 1, 0):
        stats.record_verification(3, k)
    stats.passes, stats.tokens = 5, 12
    return [
        run("ref", "en_set", [("a b c d", "a b c d"), ("e f", "e x")], [2.0, 1.0, 3.0], 10.0),  # RTF 0.2
        run("fast", "en_set", [("a b c d", "a c d"), ("e f", "e f g")], [0.5, 0.4, 0.6], 10.0, stats=stats),  # RTF 0.05
        run("ref", "zh_set", [("语音", "语言")], [1.0], 4.0, unit="char"),
        run("fast", "zh_set", [("语音", "")], [], 4.0, supported=False, unit="char"),
    ]


def test_summary_and_set_tables_hold_the_numbers(results):
    s = summary_table(results, "ref")
    assert s.rows[0] == ["en_set", "ref", "WER", "16.7", "0.2000", "1.00"]  # 1 error in 6 words
    assert s.rows[1] == ["en_set", "fast", "WER", "33.3", "0.0500", "0.25"]  # 2 errors in 6 words, 4x faster
    assert s.rows[2][:4] == ["zh_set", "ref", "CER", "50.0"]
    assert s.rows[3][3:] == [NOT_SUPPORTED] * 3
    t = set_table(results, "en_set", "ref")
    assert t.columns[-1] == "tokens/pass"
    assert t.rows[0][2] == "—"  # the reference itself
    # against the reference, paired by utterance: u0 gains an error (4 words), u1 keeps its one (2 words); resampling
    # the two gives 2/8, 1/6 or 0/4 more, so +16.7 with an interval from 0 to 25 points
    assert t.rows[1][:8] == ["fast", "33.3", "+16.7 (+0.0 to +25.0)", "0", "1", "1", "6", "0"]  # Δ, S, D, I, N, failed
    assert t.rows[1][-1] == "2.40"  # 12 tokens in 5 passes
    assert "tokens/pass" not in set_table(results, "zh_set", "ref").columns  # no system there has MTP stats


def test_markdown_tables_are_well_formed(results):
    for t in asr_tables(results, "ref"):
        lines = [line for line in t.markdown().splitlines() if line.startswith("|")]
        assert len({line.count("|") for line in lines}) == 1, t.title  # every row has the header's columns
        assert len(lines) == len(t.rows) + 2
    acc = asr_tables(results, "ref")[-1]
    assert acc.title == "MTP acceptance"
    assert acc.rows[0][6:] == ["0.750", "0.667", "1.000"]  # 3/4, 2/3 (two of three reached pos 2), 2/2


def test_asr_report_files(results, tmp_path: Path):
    path = write_asr_report(results, tmp_path / "rep", "ref", "unisono eval asr -m x", header="Header text.")
    text = path.read_text()
    assert path.name == "README.md" and "Header text." in text and "unisono eval asr -m x" in text
    for t in asr_tables(results, "ref"):
        assert t.markdown() in text
    for png in ("error_rates.png", "rtf.png", "mtp_acceptance.png", "mtp_accepted_length.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == PNG and f"]({png})" in text


def test_mtp_report_files(tmp_path: Path):
    stats = DecodeStats(n_branches=2)
    for k in (2, 1, 0):
        stats.record_verification(2, k)
    stats.passes, stats.tokens = 4, 7
    r = MTPResult(n_drafts=2, clips=1, audio_seconds=3.0, identical=True, greedy_passes=7, mtp_passes=4, tokens=7,
                  greedy_seconds=1.0, mtp_seconds=0.5, stats=stats.to_dict())
    assert r.speedup == pytest.approx(2.0) and r.pass_reduction == pytest.approx(7 / 4)
    path = write_mtp_report([r], tmp_path, "tiny", "unisono eval mtp -m x")
    text = path.read_text()
    assert "| 2 | yes | 7 | 4 | 1.75 | 1.75 | 1.000 | 0.500 | 2.00 | 0.667 | 0.500 |" in text
    assert (tmp_path / "mtp_speedup.png").read_bytes()[:8] == PNG and (tmp_path / "mtp.json").is_file()


def test_table_renders_in_rich():
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(Table("T", ["a", "b"], [["x", "1"]], note="n").rich())
    assert "x" in console.export_text()
