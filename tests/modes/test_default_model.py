"""The embedded default model, unisono-tiny, on real speech it was never trained on.

The bounds are the figures measured when the model was trained (see its model card) plus a
margin: a regression in the model, the prompt, the features or the decoding loop breaks them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unisono.eval.normalize import make_scoring
from unisono.model.unisono import Unisono, default_model_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    path = default_model_path()
    assert (path / "config.json").is_file(), f"the embedded default model is missing at {path}"
    return Unisono.load(path)


def _rows(base, n):
    rows = [json.loads(line) for line in (base / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return rows[:n]


def _error_rate(refs, hyps, convention):
    import jiwer

    scoring = make_scoring(convention)
    refs, hyps = [scoring.normalize(r) for r in refs], [scoring.normalize(h) for h in hyps]
    return jiwer.wer(refs, hyps) if scoring.unit == "word" else jiwer.cer(refs, hyps)


def test_the_model_ships_with_a_card_and_speech_tokens(model):
    assert (default_model_path() / "README.md").is_file()
    assert model.vocab.n_speech == model.config.vocab.n_speech_tokens > 0
    assert model.mtp is not None and model.mtp.n_branches == 5
    assert model.config.mtp.default_drafts == 1  # the fastest K measured (model card)
    stages = [s["stage"] for s in model.config.meta["stages"]]
    assert {"align", "pretrain", "cooldown", "sft-asr", "mtp"} <= set(stages)  # trained through every stage


# unisono-tiny's CER on the first 40 AN4 test clips when it was shipped was 0.241 (docs/eval/unisono-tiny:
# 26.5 % on 100; the checkpoint before it: 0.478); a model that emits nothing or garbage scores 1.0 or more.
AN4_CER_BOUND = 0.33


def test_recognises_held_out_real_speech(model, real_speech_dir):
    base = real_speech_dir / "an4_test"
    rows = _rows(base, 40)
    hyps = model.transcribe([base / r["audio"] for r in rows], language="en")
    rate = _error_rate([r["text"] for r in rows], [t.text for t in hyps], "an4")
    assert rate < AN4_CER_BOUND, f"an4_test: CER {rate:.3f} (bound {AN4_CER_BOUND})"


@pytest.mark.parametrize("subset", ["an4_test", "ljspeech_lj001"])
def test_mtp_is_greedy_in_fewer_passes(model, real_speech_dir, subset):
    base = real_speech_dir / subset
    paths = [base / r["audio"] for r in _rows(base, 6)]
    greedy = model.transcribe(paths, mtp=False, language="en")
    fast = model.transcribe(paths, mtp=True, language="en")
    # verified decoding keeps only what greedy decoding would produce
    assert [t.text for t in fast] == [t.text for t in greedy]
    assert sum(t.stats.passes for t in fast) < sum(t.stats.passes for t in greedy)


def test_load_without_a_path_is_the_embedded_default(model):
    default = Unisono.load()
    assert default.config.name == model.config.name == "unisono-tiny"
    for (name, a), (_, b) in zip(default.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name


def test_int16_arrays_are_read_as_pcm(model, real_speech_dir):
    from unisono.audio.io import load_audio

    base = real_speech_dir / "an4_test"
    speech = load_audio(base / _rows(base, 1)[0]["audio"])
    pcm = (speech * 32767).round().astype(np.int16)
    as_int, as_float = model.transcribe(pcm, language="en"), model.transcribe(pcm.astype(np.float32) / 32767, language="en")
    assert as_int.text == as_float.text and as_int.text  # once read as floats of +-32767: other words
