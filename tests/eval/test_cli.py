"""`unisono eval asr` and `unisono eval mtp` end to end on two real clips: report, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import make_tiny_model
from typer.testing import CliRunner

from unisono.cli import app
from unisono.eval.asr import load_results

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def checkpoint(tiny_tokenizer, tmp_path_factory) -> Path:
    return make_tiny_model(tiny_tokenizer, seed=5).save(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def two_clips(real_speech_dir, tmp_path_factory) -> Path:
    """The first two AN4 test clips, as a set of their own (absolute audio paths)."""
    src = real_speech_dir / "an4_test"
    rows = [json.loads(line) for line in (src / "manifest.jsonl").read_text().splitlines()[:2]]
    folder = tmp_path_factory.mktemp("sets") / "an4_two"
    folder.mkdir()
    (folder / "manifest.jsonl").write_text("".join(json.dumps({**r, "audio": str(src / r["audio"])}) + "\n" for r in rows))
    return folder


@pytest.mark.slow
def test_eval_asr_writes_report_and_resumes(two_clips, checkpoint, tmp_path):
    report = tmp_path / "report"
    args = ["eval", "asr", "-m", str(two_clips), "--systems", f"pocketsphinx,unisono:{checkpoint}",
            "--repeats", "1", "--report", str(report)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    text = (report / "README.md").read_text()
    assert "### an4_two" in text and "pocketsphinx en-us" in text and "unisono tiny mtp" in text
    assert "### MTP acceptance" in text and "--systems pocketsphinx,unisono:" in text
    for png in ("error_rates.png", "rtf.png", "mtp_acceptance.png", "mtp_accepted_length.png"):
        assert (report / png).stat().st_size > 1000
    results = load_results(report / "results.jsonl")
    assert [r.system for r in results] == ["pocketsphinx en-us", "unisono tiny mtp"]
    assert all(len(r.utterances) == 2 and r.scoring == "an4" for r in results)
    assert results[1].stats().tokens > 0  # the unisono run carries its decoder statistics

    again = runner.invoke(app, args)  # everything is read back, nothing rerun
    assert again.exit_code == 0, again.output
    assert again.stderr.count("read back") == 2
    new = (report / "README.md").read_text()
    assert "2 of the 2 (set, system) results were read back" in new
    assert new[new.index("### Summary"):] == text[text.index("### Summary"):]  # the same numbers
    assert len(load_results(report / "results.jsonl")) == 2


@pytest.mark.parametrize("args, message", [
    (["--systems", "pocketsphinx:nope"], "unknown option"),
    (["--systems", "unisono:/does/not/exist"], "no unisono checkpoint"),
    (["--scoring", "an4_two=fr"], "SET=en|zh|an4"),
    (["--reference", "whisper"], "none of the systems"),
    (["--repeats", "0"], "repeats must be >= 1"),
])
def test_eval_asr_bad_options(two_clips, args, message):
    out = runner.invoke(app, ["eval", "asr", "-m", str(two_clips), "--systems", "pocketsphinx", *args])
    assert out.exit_code == 2 and message in " ".join(out.output.split())


def test_eval_asr_bad_manifest(tmp_path):
    (tmp_path / "manifest.jsonl").write_text("{not json\n")
    out = runner.invoke(app, ["eval", "asr", "-m", str(tmp_path), "--systems", "pocketsphinx"])
    assert out.exit_code == 2 and "not valid JSON" in out.output


@pytest.mark.slow
def test_eval_mtp_sweep(two_clips, checkpoint, tmp_path):
    out = runner.invoke(app, ["eval", "mtp", "--model", str(checkpoint), "-m", str(two_clips), "--drafts", "1,5",
                              "--repeats", "1", "--report", str(tmp_path)])
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "mtp.json").read_text())
    assert [r["n_drafts"] for r in rows] == [1, 5] and all(r["identical"] for r in rows)
    assert (tmp_path / "mtp_speedup.png").stat().st_size > 1000 and "MTP vs greedy" in (tmp_path / "README.md").read_text()
    bad = runner.invoke(app, ["eval", "mtp", "--model", str(checkpoint), "-m", str(two_clips), "--drafts", "9"])
    assert bad.exit_code == 2 and "5 MTP branches" in bad.output
