"""The real-audio pipeline end to end on a few real clips, bad input, resumption and the runners."""

import json
import shutil

import numpy as np
import pytest

from unisono.audio.io import load_audio, save_audio
from unisono.data.manifest import read_manifest, read_rejections
from unisono.data.process import (
    RESULTS_NAME,
    ProcessConfig,
    collect_recordings,
    read_results,
    run,
)
from unisono.peers.recognizers import Recognizer, TranscriptionError


@pytest.fixture(scope="module")
def batch(tmp_path_factory, real_speech_dir):
    """Two real clips and every kind of bad file, in one folder."""
    d = tmp_path_factory.mktemp("inbox")
    for name in ("LJ001-0002", "LJ001-0007"):
        shutil.copy(real_speech_dir / "ljspeech_lj001" / "wav" / f"{name}.wav", d / f"{name}.wav")
    (d / "empty.wav").write_bytes(b"")
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage that is not audio" * 10)
    save_audio(d / "silent.wav", np.zeros(32000, np.float32), 16000)
    save_audio(d / "hiss.wav", (0.05 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32), 16000)
    return d


@pytest.mark.slow
def test_bad_files_are_rejected_with_reasons_and_the_run_completes(batch, tmp_path):
    recs = collect_recordings([batch])
    assert len(recs) == 6
    summary = run(recs, tmp_path)
    rejected = {r.id.split("/")[-1]: r for r in read_rejections(tmp_path)}
    assert rejected["empty"].stage == "load" and "empty" in rejected["empty"].reason
    assert rejected["corrupt"].stage == "load" and "CorruptAudioError" in rejected["corrupt"].reason
    assert rejected["silent"].stage == "load" and "silent" in rejected["silent"].reason
    assert rejected["hiss"].stage == "vad" and "no speech" in rejected["hiss"].reason
    utts = read_manifest(tmp_path)
    assert {u.meta["segment"]["recording"].split("/")[-1] for u in utts} == {"LJ001-0002", "LJ001-0007"}
    assert summary["recordings"] == 6 and summary["rejected"]["by_stage"]["load"] == 3
    assert summary["agreement"]["clips"] == 2 and summary["agreement"]["kept"] == len(utts)
    for u in utts:
        assert u.duration <= 30.0
        assert u.meta["tier"] in ("gold", "silver", "bronze")
        assert set(u.meta["asr"]) == {"faster-whisper tiny.en int8 beam1", "pocketsphinx en-us"}
        assert u.text == u.meta["asr"]["faster-whisper tiny.en int8 beam1"]  # the primary system's transcript
        assert 0 <= u.meta["quality"] <= 1 and u.meta["speakers"] == 1 and u.meta["synthetic"] is False
        clip = load_audio(tmp_path / u.audio)
        assert abs(len(clip) / 16000 - u.duration) < 0.01
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


class EchoRecogniser(Recognizer):
    """Stands in for the recognisers where the test is about bookkeeping, not transcripts."""

    languages = None

    def __init__(self, name):
        self.name = name

    def transcribe(self, audio, language):
        return f"clip of {len(audio) // 1600} tenths"


def test_a_killed_run_resumes_without_duplicates_or_losses(batch, tmp_path, monkeypatch):
    from unisono.data import process as proc

    monkeypatch.setattr(proc.Processor, "backend", lambda self, spec: EchoRecogniser(spec))
    recs = collect_recordings([batch])
    cfg = ProcessConfig(detect_synthetic=False)
    run(recs, tmp_path, cfg, limit=3)
    assert len(read_results(tmp_path)) == 3
    # a kill mid-write leaves a torn last line: it must be ignored and that recording redone
    with open(tmp_path / RESULTS_NAME, "a") as f:
        f.write('{"recording": "' + recs[3].id + '", "utterances": [{"id": "tor')
    summary = run(recs, tmp_path, cfg)
    results = read_results(tmp_path)
    assert sorted(r.recording for r in results) == sorted(r.id for r in recs)  # each once, none lost
    ids = [u.id for u in read_manifest(tmp_path)]
    assert len(ids) == len(set(ids))
    assert summary["recordings"] == len(recs)
    # a third run has nothing left to do and changes nothing
    before = (tmp_path / "manifest.jsonl").read_bytes()
    run(recs, tmp_path, cfg)
    assert (tmp_path / "manifest.jsonl").read_bytes() == before


def test_manifest_inputs_keep_language_and_reference(real_speech_dir, tmp_path):
    recs = collect_recordings([real_speech_dir / "aishell_sample_zh"])
    assert recs[0].language == "zh" and recs[0].reference and recs[0].id.startswith("aishell_sample_zh/")
    run(recs[:1], tmp_path, ProcessConfig(detect_synthetic=False))
    (u,) = read_manifest(tmp_path)
    # no offline recogniser knows Mandarin: kept, but never promoted past "unverified"
    assert u.meta["tier"] == "unverified" and "cross-validation needs 2" in u.meta["unverified_reason"]
    assert u.meta["reference"] == recs[0].reference


def test_a_failing_recogniser_costs_only_its_segment(batch, tmp_path, monkeypatch):
    from unisono.data import process as proc

    class Broken(Recognizer):
        name, languages = "broken", None

        def transcribe(self, audio, language):
            raise TranscriptionError("server answered 500")

    monkeypatch.setattr(proc.Processor, "backend", lambda self, spec: Broken())
    recs = [r for r in collect_recordings([batch]) if r.id.endswith("LJ001-0002")]
    summary = run(recs, tmp_path, ProcessConfig(detect_synthetic=False))
    (rej,) = read_rejections(tmp_path)
    assert rej.stage == "asr" and "500" in rej.reason and summary["utterances"] == 0


class FixedRecogniser(Recognizer):
    languages = None

    def __init__(self, name, text):
        self.name, self.text = name, text

    def transcribe(self, audio, language):
        return self.text


@pytest.mark.parametrize("max_disagreement, kept", [(0.05, False), (0.2, True)])
def test_long_form_discards_by_rover_disagreement(batch, tmp_path, monkeypatch, max_disagreement, kept):
    from unisono.data import process as proc
    from unisono.data.rover import RoverConfig

    texts = {"faster-whisper": "The cat sat on the mat.", "pocketsphinx": "the cat sat on the mat",
             "faster-whisper:beam5": "the cat sat on a mat"}
    monkeypatch.setattr(proc.Processor, "backend", lambda self, spec: FixedRecogniser(spec, texts[spec]))
    cfg = ProcessConfig(long_form=True, detect_synthetic=False,
                        rover=RoverConfig(max_disagreement=max_disagreement))
    recs = [r for r in collect_recordings([batch]) if r.id.endswith("LJ001-0002")]
    run(recs, tmp_path, cfg)
    utts, rejected = read_manifest(tmp_path), read_rejections(tmp_path)
    if kept:  # one slot of six disagrees: 0.167 <= 0.2
        (u,) = utts
        assert u.text == "The cat sat on the mat." and u.meta["fused"] == "the cat sat on the mat"
        assert u.meta["rover"]["disagreement"] == pytest.approx(1 / 6, abs=1e-4) and u.meta["tier"] == "rover"
    else:
        (r,) = rejected
        assert not utts and r.stage == "rover" and "disagreement 0.167 > 0.05" in r.reason


@pytest.mark.slow
def test_long_form_with_the_bundled_recognisers(real_speech_dir, tmp_path):
    # two LJ clips 3 s apart: a pause longer than max_merge_gap_s, so two utterances
    wavs = [load_audio(real_speech_dir / "ljspeech_lj001" / "wav" / f"LJ001-000{k}.wav") for k in (2, 7)]
    long = np.concatenate([wavs[0], np.zeros(3 * 16000, np.float32), wavs[1]])
    (tmp_path / "in").mkdir()
    save_audio(tmp_path / "in" / "long.wav", long, 16000)
    # PocketSphinx rarely agrees with Whisper to 0.05 on LJ Speech: keep everything, check the records
    from unisono.data.rover import RoverConfig

    cfg = ProcessConfig(long_form=True, detect_synthetic=False, rover=RoverConfig(max_disagreement=1.0))
    summary = run(collect_recordings([tmp_path / "in"]), tmp_path / "out", cfg)
    utts = read_manifest(tmp_path / "out")
    assert len(utts) == 2 and summary["rover"]["kept"] == summary["rover"]["segments"] == 2
    for u in utts:
        assert u.meta["tier"] == "rover" and u.duration <= 30
        assert set(u.meta["asr"]) == {"faster-whisper tiny.en int8 beam1", "pocketsphinx en-us", "faster-whisper tiny.en int8 beam5"}
        assert 0 <= u.meta["rover"]["disagreement"] <= 1
        assert u.text[0].isupper() and u.text[-1] in ".?"  # refined
    assert "comparatively modern" in utts[0].meta["fused"]


@pytest.mark.slow
def test_process_pool_matches_in_process(batch, tmp_path):
    recs = [r for r in collect_recordings([batch]) if r.id.split("/")[-1] in ("LJ001-0002", "corrupt", "hiss")]
    run(recs, tmp_path / "serial")
    run(recs, tmp_path / "pool", workers=2)
    key = lambda d: sorted((u.id, u.text, u.meta["tier"]) for u in read_manifest(d))  # noqa: E731
    assert key(tmp_path / "pool") == key(tmp_path / "serial")
    rej = lambda d: sorted((r.id, r.stage) for r in read_rejections(d))  # noqa: E731
    assert rej(tmp_path / "pool") == rej(tmp_path / "serial")


@pytest.mark.slow
def test_ray_data_runner_on_a_local_instance(batch, tmp_path):
    ray = pytest.importorskip("ray")
    recs = [r for r in collect_recordings([batch]) if r.id.split("/")[-1] in ("LJ001-0002", "corrupt")]
    try:
        summary = run(recs, tmp_path / "ray", ProcessConfig(detect_synthetic=False), workers=1, runner="ray")
    finally:
        ray.shutdown()
    run(recs, tmp_path / "local", ProcessConfig(detect_synthetic=False))
    assert summary["recordings"] == 2 and summary["rejected"]["by_stage"].get("load") == 1
    key = lambda d: sorted((u.id, u.text, u.meta["tier"]) for u in read_manifest(d))  # noqa: E731
    assert key(tmp_path / "ray") == key(tmp_path / "local")


def test_cli_process_reports_tiers_and_rejections(batch, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from unisono.data import process as proc
    from unisono.data.cli import app

    monkeypatch.setattr(proc.Processor, "backend", lambda self, spec: EchoRecogniser(spec))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["process", str(batch), "--out", str(out), "--no-synthetic"])
    assert result.exit_code == 0, result.output
    assert "en/gold" in result.output or "en/silver" in result.output
    assert "rejected: 4" in result.output
    assert len(read_manifest(out)) == 2 and len(read_rejections(out)) == 4
    bad = CliRunner().invoke(app, ["process", str(tmp_path / "nowhere"), "--out", str(out)])
    assert bad.exit_code == 2 and "no such file" in bad.output
    typo = CliRunner().invoke(app, ["process", str(batch), "--out", str(out), "--asr", "faster-whisper,sphinx"])
    assert typo.exit_code == 2 and "unknown recogniser 'sphinx'" in typo.output


def test_huge_stereo_and_odd_rate_inputs(batch, tmp_path, monkeypatch):
    import soundfile as sf
    import soxr

    from unisono.data import process as proc

    monkeypatch.setattr(proc.Processor, "backend", lambda self, spec: EchoRecogniser(spec))
    mono = load_audio(batch / "LJ001-0002.wav")
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    inbox = tmp_path / "in"
    inbox.mkdir()
    sf.write(inbox / "stereo44k.wav", soxr.resample(stereo, 16000, 44100), 44100)
    recs = collect_recordings([inbox])
    run(recs, tmp_path / "ok", ProcessConfig(detect_synthetic=False))
    (u,) = read_manifest(tmp_path / "ok")
    info = sf.info(tmp_path / "ok" / u.audio)
    assert info.samplerate == 16000 and info.channels == 1
    run(recs, tmp_path / "huge", ProcessConfig(detect_synthetic=False, max_file_s=1.0))
    (r,) = read_rejections(tmp_path / "huge")
    assert r.stage == "load" and "AudioTooLongError" in r.reason and "limit of 1.0 s" in r.reason


def test_summary_measures_the_primary_transcript_against_references(batch, tmp_path, monkeypatch):
    from unisono.data import process as proc
    from unisono.data.manifest import Utterance, write_manifest

    monkeypatch.setattr(proc.Processor, "backend", lambda self, spec: FixedRecogniser(spec, "in being comparatively modern"))
    shutil.copy(batch / "LJ001-0002.wav", tmp_path / "a.wav")
    shutil.copy(batch / "LJ001-0002.wav", tmp_path / "b.wav")
    write_manifest(tmp_path / "set" / "manifest.jsonl", [
        Utterance("a", "../a.wav", "In being comparatively modern.", "en", 1.9),
        Utterance("b", "../b.wav", "something else entirely here", "en", 1.9),
    ])
    summary = run(collect_recordings([tmp_path / "set"]), tmp_path / "out", ProcessConfig(detect_synthetic=False))
    checks = {c["id"]: c for r in read_results(tmp_path / "out") for c in r.checks}
    assert checks["set/a_000"]["reference_wer"] == 0.0 and checks["set/b_000"]["reference_wer"] == 1.0
    assert summary["primary_reference_wer"]["kept"] == {"clips": 2, "mean": 0.5}
    assert summary["agreement"]["clips"] == 2 and summary["agreement"]["mean_wer"] == 0.0
