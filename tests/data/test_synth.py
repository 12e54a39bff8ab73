"""The corpus builder: clips match their manifest, bad jobs are rejected, kill + resume loses
nothing and duplicates nothing, and Ray builds the same corpus as the process pool."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unisono.data.augment import AugmentConfig
from unisono.data.manifest import read_manifest, read_rejections
from unisono.data.synth import (
    SENTENCES_NAME,
    SynthConfig,
    build,
    choose_voice,
    job_stream,
    render_job,
    trim_silence,
)
from unisono.data.engines import Voice
from unisono.data.text import Sentence, TextConfig, write_sentences

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed")

EN = ["The early bird gets the worm.", "A journey of one thousand miles begins with a single step.",
      "Installation is easy.", "This package is maintained by volunteers.", "Bash configures the build itself."]
ZH = ["床前明月光，疑是地上霜。", "这是一个很好的系统。", "大家都是志愿者。", "无法打开文件。"]


def _sentences(bad_zh: bool = False) -> list[Sentence]:
    out = [Sentence(f"{i:012x}", t, t, "en", f"test:en#{i}") for i, t in enumerate(EN)]
    out += [Sentence(f"{100 + i:012x}", t, t, "zh", f"test:zh#{i}") for i, t in enumerate(ZH)]
    if bad_zh:  # punctuation only: the engine says nothing
        out.append(Sentence(f"{999:012x}", "……", "……", "zh", "test:zh#bad"))
    return out


def _corpus(path: Path, sentences: list[Sentence], **kw) -> SynthConfig:
    write_sentences(path / SENTENCES_NAME, sentences)
    kw.setdefault("max_clips", {"en": 4, "zh": 3})
    kw.setdefault("workers", 1)
    kw.setdefault("augment", AugmentConfig(rir_bank_size=4))
    return SynthConfig(out_dir=path, text=TextConfig(sources=()), **kw)


def test_trim_silence() -> None:
    x = np.zeros(16000, np.float32)
    x[4000:8000] = 0.5
    out = trim_silence(x)
    assert len(out) == 4000 and np.all(out == 0.5)
    assert len(trim_silence(np.zeros(1600, np.float32))) == 0
    assert len(trim_silence(np.ones(100, np.float32))) == 0  # under one frame: a click


def test_job_stream_is_fixed_by_the_seed() -> None:
    sentences = [s for s in _sentences() if s.language == "en"]
    voices = {"espeak-ng": [Voice("espeak-ng", f"en-us+m{i}", "en") for i in range(1, 8)],
              "flite": [Voice("flite", "slt", "en")]}
    cfg = SynthConfig(max_clips={"en": 1})
    take = lambda c: [j for _, j in zip(range(12), job_stream(sentences, voices, c))]  # noqa: E731
    a, b = take(cfg), take(cfg)
    assert a == b
    assert len({j["id"] for j in a}) == 12
    assert [j["rendition"] for j in a] == [0] * 5 + [1] * 5 + [2] * 2
    assert {j["sentence"]["id"] for j in a[:5]} == {s.id for s in sentences}  # every sentence before repeats
    other = take(SynthConfig(max_clips={"en": 1}, seed=1))
    assert [j["voice"] for j in other] != [j["voice"] for j in a]


def test_choose_voice_follows_engine_weights() -> None:
    voices = {"espeak-ng": [Voice("espeak-ng", f"v{i}", "en") for i in range(100)], "flite": [Voice("flite", "slt", "en")]}
    rng = np.random.default_rng(0)
    picks = [choose_voice(voices, {"espeak-ng": 0.7, "flite": 0.3}, rng).engine for _ in range(2000)]
    assert picks.count("flite") / len(picks) == pytest.approx(0.3, abs=0.04)


def test_build_writes_clips_that_match_the_manifest(tmp_path: Path) -> None:
    cfg = _corpus(tmp_path, _sentences(), engines=("espeak-ng", "flite"))
    report = build(cfg)
    utts = read_manifest(tmp_path)
    assert report.clips == {"en": 4, "zh": 3} and report.rejected == 0 and report.new_clips == 7
    assert len({u.id for u in utts}) == 7
    texts = {s.text: s for s in _sentences()}
    for u in utts:
        info = sf.info(u.audio_path(tmp_path))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert info.frames / 16000 == pytest.approx(u.duration, abs=1e-3)
        assert cfg.min_duration_s <= u.duration <= cfg.max_duration_s
        assert u.speaker == f"{u.meta['engine']}:{u.meta['voice']}"
        assert texts[u.text].language == u.language and texts[u.text].source == u.source
        assert {"rate"} <= set(u.meta["synth"]) and isinstance(u.meta["augment"], list)
        assert u.meta["synthetic"] is True and u.meta["tier"] == "synthetic"
        if u.language == "zh":
            assert u.meta["voice"].startswith("cmn-latn-pinyin+")
    assert (tmp_path / "manifest.parquet").exists()
    run = json.loads((tmp_path / "runs.jsonl").read_text().splitlines()[-1])
    assert run["new_clips"] == 7 and run["clips_per_s"] > 0
    # Built again: everything is done, nothing is redone.
    again = build(cfg)
    assert again.new_clips == 0 and read_manifest(tmp_path) == utts


def test_hours_target_stops_at_the_first_clip_past_it(tmp_path: Path) -> None:
    cfg = _corpus(tmp_path, _sentences(), max_clips=None, hours={"en": 6 / 3600, "zh": 0.0},
                  augment=AugmentConfig(p_clean=1.0))
    build(cfg)
    durations = [u.duration for u in read_manifest(tmp_path)]
    assert {u.language for u in read_manifest(tmp_path)} == {"en"}
    assert sum(durations[:-1]) < 6 <= sum(durations)


def test_bad_job_is_rejected_and_the_run_goes_on(tmp_path: Path) -> None:
    cfg = _corpus(tmp_path, _sentences(bad_zh=True), max_clips={"en": 2, "zh": 5}, engines=("espeak-ng",))
    report = build(cfg)
    rejected = read_rejections(tmp_path)
    assert [r.id for r in rejected] == [f"zh-{999:012x}-0"]
    assert rejected[0].stage == "synth" and rejected[0].input == "……" and "only silence" in rejected[0].reason
    assert report.clips == {"en": 2, "zh": 4} and report.rejected == 1
    # A rejection counts as done: a resumed run does not retry it forever.
    again = build(cfg)
    assert again.new_clips == 0 and len(read_rejections(tmp_path)) == 1


def _flacs(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "audio").rglob("*.flac") if not p.name.endswith(".tmp.flac")}


@pytest.mark.slow
def test_kill_and_resume_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    n = 60
    sentences = _sentences()
    cli = [sys.executable, "-m", "unisono.cli", "data", "synth", "--max-clips", str(n), "--workers", "2",
           "--engines", "espeak-ng"]
    killed = tmp_path / "killed"
    write_sentences(killed / SENTENCES_NAME, sentences)
    proc = subprocess.Popen(cli + ["--out", str(killed)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = killed / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_manifest(killed, skip_partial_tail=True)
    assert 20 <= len(before) < 2 * n, "the run must be cut off mid-way for this test to mean anything"
    with open(manifest, "a") as f:  # and a record torn mid-write
        f.write('{"id": "en-torn", "audio": "aud')

    resumed = subprocess.run(cli + ["--out", str(killed)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = read_manifest(killed)  # strict: no torn line left
    ids = [u.id for u in after]
    assert len(ids) == len(set(ids)), "duplicates"
    assert {u.id for u in before} <= set(ids), "lost clips"
    assert len(ids) + len(read_rejections(killed)) == 2 * n
    assert _flacs(killed) == {u.audio for u in after}

    # The same corpus as a run that was never interrupted, clip for clip.
    reference = tmp_path / "reference"
    write_sentences(reference / SENTENCES_NAME, sentences)
    subprocess.run(cli + ["--out", str(reference)], check=True, capture_output=True, timeout=300)
    ref = {u.id: u for u in read_manifest(reference)}
    assert set(ref) == set(ids)
    for u in after:
        assert filecmp.cmp(u.audio_path(killed), ref[u.id].audio_path(reference), shallow=False)
        assert u.meta == ref[u.id].meta


@pytest.mark.slow
def test_ray_builds_the_same_corpus_as_the_process_pool(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    kw = dict(max_clips={"en": 3, "zh": 2}, engines=("espeak-ng",), workers=2)
    pool = build(_corpus(tmp_path / "pool", _sentences(), **kw))
    ray_report = build(_corpus(tmp_path / "ray", _sentences(), ray_address="local", ray_batch=4, **kw))
    assert ray_report.clips == pool.clips == {"en": 3, "zh": 2}
    a = {u.id: u for u in read_manifest(tmp_path / "pool")}
    b = {u.id: u for u in read_manifest(tmp_path / "ray")}
    assert set(a) == set(b)
    for i in a:
        assert filecmp.cmp(a[i].audio_path(tmp_path / "pool"), b[i].audio_path(tmp_path / "ray"), shallow=False)


def test_speech_too_short_for_its_text_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An engine that returns 1 s of sound whatever the text: long sentences cannot fit in it.
    import unisono.data.synth as synth

    blip = (0.3 * np.random.default_rng(0).standard_normal(int(1.0 * 16000))).astype(np.float32)
    monkeypatch.setattr(synth, "render", lambda voice, text, params, sr: blip)
    cfg = _corpus(tmp_path, _sentences(), max_clips={"en": 5, "zh": 0}, engines=("espeak-ng",))
    report = build(cfg)
    reasons = {r.input: r.reason for r in read_rejections(tmp_path)}
    long = "A journey of one thousand miles begins with a single step."
    assert "only 1.00 s of speech for 47 characters" in reasons[long]
    # 36 and 47 characters need over 1 s at 33 characters a second; 19 to 29 do not.
    assert set(reasons) == {long, "This package is maintained by volunteers."}
    assert report.clips == {"en": 5 - len(reasons)}


def _dies_on_one_sentence(job: dict, out_dir: str, cfg: dict) -> dict:
    """A job function whose worker process dies (as if killed or out of memory) on one sentence."""
    if job["sentence"]["text"] == "大家都是志愿者。":
        os._exit(1)
    return render_job(job, out_dir, cfg)


def test_a_job_that_kills_its_worker_is_rejected_and_the_rest_is_made(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import unisono.data.synth as synth

    monkeypatch.setattr(synth, "render_job", _dies_on_one_sentence)
    cfg = _corpus(tmp_path, _sentences(), max_clips={"en": 5, "zh": 4}, engines=("espeak-ng",), workers=2,
                  augment=AugmentConfig(p_clean=1.0))
    report = build(cfg)
    rejected = read_rejections(tmp_path)
    assert [r.input for r in rejected] == ["大家都是志愿者。"]
    assert "worker process died" in rejected[0].reason
    utts = read_manifest(tmp_path)
    assert report.clips == {"en": 5, "zh": 3} and len({u.id for u in utts}) == 8
    assert _flacs(tmp_path) == {u.audio for u in utts}


@pytest.mark.slow
def test_neural_voices_build_and_resume(tmp_path: Path) -> None:
    """Piper and Kokoro clips: each manifest line names its engine and voice and records every
    control used (rate and the engine's own settings, pitch shift) and what was measured."""
    from unisono.data import neural_voices

    if neural_voices.missing("piper", "en") or neural_voices.missing("kokoro", "zh"):
        pytest.skip("piper-tts, the Kokoro packages or misaki[zh] are not installed")
    cfg = _corpus(tmp_path, _sentences(), max_clips={"en": 3, "zh": 2}, engines=("piper", "kokoro"), workers=2)
    report = build(cfg)
    assert report.clips == {"en": 3, "zh": 2} and report.rejected == 0
    utts = read_manifest(tmp_path)
    for u in utts:
        params = u.meta["synth"]
        assert sf.info(u.audio_path(tmp_path)).samplerate == 16000
        assert u.speaker == f"{u.meta['engine']}:{u.meta['voice']}"
        if u.meta["engine"] == "piper":
            assert u.language == "en" and u.meta["voice"] == "en_US-joe-medium"
            assert set(params) == {"rate", "length_scale", "noise_scale", "noise_w_scale", "semitones"}
        else:
            assert u.meta["engine"] == "kokoro" and u.meta["voice"] in neural_voices.KOKORO_STYLES
            assert set(params) == {"rate", "speed", "semitones"}
        assert 0.8 <= params["rate"] <= 1.25
        measured = u.meta["measured"]
        assert 0.3 < measured["speech_s"] < u.duration and 60 < measured["f0_median_hz"] < 400
    assert {u.meta["engine"] for u in utts if u.language == "zh"} == {"kokoro"}
    # Resumable like the other engines: everything is done, nothing is redone.
    assert build(cfg).new_clips == 0 and read_manifest(tmp_path) == utts


def test_engine_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        SynthConfig(engines=("espeak-ng", "pipr"))
    with pytest.raises(ValueError, match="unknown engine"):
        SynthConfig(engine_weights={"kokor": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        SynthConfig(engine_weights={"piper": -1.0})


def test_cli_names_a_missing_engine_and_a_bad_weight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from unisono.data import neural_voices
    from unisono.data.cli import app

    write_sentences(tmp_path / SENTENCES_NAME, _sentences())
    monkeypatch.setattr(neural_voices, "_has", lambda module: False)  # as if piper-tts were not installed
    res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--max-clips", "1", "--workers", "1",
                                   "--engines", "espeak-ng,piper", "--engine-weights", "piper=2"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # rich wraps long lines
    assert "skipping piper: piper-tts or its voice is not installed (pip install piper-tts==1.8.0" in said
    assert {u.meta["engine"] for u in read_manifest(tmp_path)} == {"espeak-ng"}
    bad = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "b"), "--engine-weights", "piper:2"])
    assert bad.exit_code != 0 and "ENGINE=WEIGHT" in " ".join(bad.output.split())
    assert bad.exception is None or isinstance(bad.exception, SystemExit)  # a message, not a traceback
