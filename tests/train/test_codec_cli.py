"""`unisono train codec ...` from the command line: the codebook of a run or a codec folder, refusals that
leave the run as it was, the options of each job, the recogniser's texts; a job trains and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from tests.train.conftest import codec_config
from unisono.cli import app
from unisono.codec import SpeechCodec
from unisono.codec.codebook import assign_tokens, write_codebook
from unisono.train.codec_data import CodecData

runner = CliRunner()


def said(output: str) -> str:
    return " ".join(output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def refused(*args: str) -> str:
    res = runner.invoke(app, ["train", "codec", *args])
    assert res.exit_code == 2, res.output
    return said(res.output)


def test_fit_tokenizer_reuses_the_codebook_of_a_run_or_of_an_exported_codec(prepared, tmp_path):
    data = str(prepared / "data")
    centroids = torch.randn(8, 32)
    write_codebook(tmp_path / "trained", centroids, layer=2)
    assert "holds no codebook" in refused("fit-tokenizer", data, str(tmp_path / "run"), "--codebook-of", str(tmp_path))
    assert not (tmp_path / "run/tokens.npy").exists()
    res = runner.invoke(app, ["train", "codec", "fit-tokenizer", data, str(tmp_path / "run"), "--codebook-of",
                              str(tmp_path / "trained"), "--threads", "1"])
    assert res.exit_code == 0, res.output
    features = CodecData(data, layer=2).features
    np.testing.assert_array_equal(np.load(tmp_path / "run/tokens.npy"), assign_tokens(features, centroids))
    tokenizer = json.loads((tmp_path / "run/codec.json").read_text())["tokenizer"]
    assert (tokenizer["layer"], tokenizer["codebook_size"]) == (2, 8)
    # an exported codec folder: its settings become the run's
    torch.manual_seed(0)
    speech = SpeechCodec(codec_config(), centroids=torch.randn(8, 32)).save(tmp_path / "speech")
    res = runner.invoke(app, ["train", "codec", "fit-tokenizer", data, str(tmp_path / "run2"), "--codebook-of", str(speech)])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "run2/tokens.npy"),
                                  assign_tokens(features, SpeechCodec.load(speech).centroids.float()))
    assert json.loads((tmp_path / "run2/codec.json").read_text()) == json.loads(json.dumps(codec_config().to_dict()))
    # weighing sources is for a codebook being fitted; a manifest must hold some of the clips
    manifest = str(prepared / "synth/manifest.jsonl")
    assert "not with --codebook-of" in refused("fit-tokenizer", data, str(tmp_path / "run3"), "--codebook-of",
                                               str(speech), "--oversample", f"{manifest}=3")
    assert "no clip of" in refused("fit-tokenizer", data, str(tmp_path / "run3"), "--layer", "2", "--oversample",
                                   f"{prepared / 'data/test-en/manifest.jsonl'}=3")
    assert not (tmp_path / "run3").exists()


def test_training_or_exporting_a_wrong_folder_fails_without_writing_there(tmp_path):
    (tmp_path / "typo").mkdir()
    assert "fit-tokenizer" in refused("token2mel", str(tmp_path), str(tmp_path / "typo"))
    assert "needs codec.json" in refused("export", str(tmp_path / "typo"), str(tmp_path / "out"))
    assert list((tmp_path / "typo").iterdir()) == [] and not (tmp_path / "out").exists()


def test_each_job_takes_the_options_that_act_on_it(prepared, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "codec.json").write_text(json.dumps(codec_config().to_dict()))
    data, manifest = str(prepared / "data"), str(prepared / "synth/manifest.jsonl")
    assert "--transcript-weight too" in refused("token2mel", data, str(run), "--voice-weight", "1")
    assert "--transcript-weight too" in refused("token2mel", data, str(run), "--transcript-from", manifest)
    assert "no such manifest" in refused("token2mel", data, str(run), "--transcript-weight", "1", "--transcript-from",
                                         str(tmp_path / "missing.jsonl"))
    for bad in (manifest, f"{manifest}=many", f"{tmp_path / 'missing.jsonl'}=2"):
        assert "MANIFEST=WEIGHT" in refused("token2mel", data, str(run), "--oversample", bad)
    assert "no clip of" in refused("token2mel", data, str(run), "--oversample", f"{prepared / 'data/test-en/manifest.jsonl'}=2")
    assert "No such option" in refused("vocoder", data, str(run), "--self-reference", "0.5")
    assert "No such option" in refused("token2mel", data, str(run), "--adversarial-weight", "1")
    assert "choose cpu or cuda" in refused("token2mel", data, str(run), "--device", "meta")
    if not torch.cuda.is_available():
        assert "sees no CUDA device" in refused("vocoder", data, str(run), "--device", "cuda")
    assert "tokens.npy is missing" in refused("token2mel", data, str(run))
    assert sorted(p.name for p in run.iterdir()) == ["codec.json"]


def test_prepare_looks_for_the_shared_real_speech_only_when_it_is_not_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UNISONO_SHARED", raising=False)
    assert "--real" in refused("prepare", str(tmp_path / "data"), "--synth", str(tmp_path / "none.jsonl"))
    assert "does not exist" in refused("prepare", str(tmp_path / "data"), "--synth", str(tmp_path / "none.jsonl"),
                                       "--real", str(tmp_path / "none.jsonl"))


def test_a_job_trains_from_the_command_line_and_is_protected_until_resumed(prepared, tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "codec", "fit-tokenizer", str(prepared / "data"), str(run), "--layer", "2",
                              "--codebook", "8"])
    assert res.exit_code == 0, res.output
    (run / "codec.json").write_text(json.dumps(codec_config().to_dict()))
    args = ["train", "codec", "vocoder", str(prepared / "data"), str(run), "--steps", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (run / "vocoder/model/weights.safetensors").is_file() and len((run / "vocoder/metrics.jsonl").read_text().splitlines()) == 2
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in said(again.output)


class Scripted:
    """A recogniser that hears each clip as written in `heard` (by the clip's first sample)."""

    def __init__(self, heard: dict[int, str]):
        self.heard = heard

    def transcribe(self, audio, language=None) -> str:
        return self.heard[int(round(float(audio[0]) * 100))]


def test_recogniser_texts_keeps_the_clips_heard_as_their_reference_in_the_recognisers_spelling(tmp_path, monkeypatch):
    from unisono.audio.io import save_audio

    (tmp_path / "wav").mkdir()
    refs = ["RUBOUT G M E F THREE NINE", "YES", "ENTER SIX TWO FOUR", "H O W E L L"]
    rows = []
    for k, text in enumerate(refs):
        save_audio(tmp_path / "wav" / f"a{k}.wav", np.full(1600, k / 100, dtype=np.float32))
        rows.append({"id": f"a{k}", "audio": f"wav/a{k}.wav", "text": text, "language": "en", "duration": 0.1})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    heard = {0: "Rubout GMEF 39.", 1: "No.", 2: "Enter 624.", 3: "H O W E L L"}
    monkeypatch.setattr("unisono.peers.recognizers.build_recognizer", lambda spec, threads=1: Scripted(heard))
    out = tmp_path / "texts" / "heard.jsonl"
    res = runner.invoke(app, ["train", "codec", "recogniser-texts", str(tmp_path / "manifest.jsonl"), str(out)])
    assert res.exit_code == 0, res.output
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    # kept where the normalised texts agree ("enter 624"), in the recogniser's spelling; left out where it misheard
    # ("no") or spells otherwise than the normaliser can tell ("gmef" against "g m e f")
    assert [(r["id"], r["text"]) for r in kept] == [("a2", "Enter 624."), ("a3", "H O W E L L")]
    assert all(Path(r["audio"]).is_absolute() and Path(r["audio"]).is_file() for r in kept)
    assert "1 of them written otherwise" in said(res.output) and "2 of 4 clips" in said(res.output)
    assert "No such" in refused("recogniser-texts", str(tmp_path / "none.jsonl"), str(out))
