"""int8 CPU inference: close to float32, MTP still equals greedy, and not saved by mistake."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from tests.conftest import make_tiny_model

from unisono.audio.io import AudioWarning
from unisono.model.unisono import Unisono


@pytest.fixture(scope="module")
def checkpoint(tiny_tokenizer, tmp_path_factory):
    return make_tiny_model(tiny_tokenizer, seed=7).save(tmp_path_factory.mktemp("q") / "tiny")


def test_int8_logits_track_float32(checkpoint):
    f32 = Unisono.load(checkpoint)
    q = Unisono.load(checkpoint, compute_type="int8")
    assert q.quantized and not f32.quantized
    ids = torch.randint(0, f32.vocab.n_text, (2, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        a = f32.decoder(input_ids=ids, attention_mask=mask).logits
        b = q.decoder(input_ids=ids, attention_mask=mask).logits
    assert not torch.equal(a, b)  # really quantised
    cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).min()
    assert cos > 0.99


def test_int8_transcribe_mtp_equals_greedy(checkpoint, real_speech_dir):
    base = real_speech_dir / "an4_test"
    rows = [json.loads(x) for x in (base / "manifest.jsonl").read_text().splitlines()[:2]]
    q = Unisono.load(checkpoint, compute_type="int8")
    paths = [base / r["audio"] for r in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)  # a clip whose decoding failed would read as "" on both sides
        greedy = q.transcribe(paths, mtp=False, max_new_tokens=16)
        fast = q.transcribe(paths, mtp=True, max_new_tokens=16)
    assert [t.text for t in fast] == [t.text for t in greedy]


def test_int8_model_refuses_to_be_saved(checkpoint, tmp_path):
    q = Unisono.load(checkpoint, compute_type="int8")
    with pytest.raises(ValueError, match="inference"):
        q.save(tmp_path / "x")
    with pytest.raises(ValueError, match="compute_type"):
        Unisono.load(checkpoint, compute_type="int4")


def test_int8_storage_round_trip_is_within_half_a_step(checkpoint, tmp_path):
    from safetensors.torch import load_file

    from unisono.model.quantize import SCALE_SUFFIX, dequantize_state, quantize_state

    f32 = Unisono.load(checkpoint)
    state = {k: v for k, v in f32.state_dict().items() if not k.startswith("encoder.")}
    stored = quantize_state(state)
    back = dequantize_state(stored)
    assert set(back) == set(state)
    for name, v in state.items():
        if name + SCALE_SUFFIX in stored:
            assert stored[name].dtype == torch.int8
            step = stored[name + SCALE_SUFFIX].float().reshape(-1, *[1] * (v.dim() - 1))
            assert ((back[name] - v).abs() <= step / 2 + 1e-3 * step).all(), name
            assert stored[name].abs().amax() == 127  # absmax scaling uses the full range
        elif v.is_floating_point():
            torch.testing.assert_close(back[name], v.half(), rtol=0, atol=0, check_dtype=False)

    # a checkpoint saved as int8 loads back as float weights: near the float model, half its float16 size
    f32.save(tmp_path / "half", dtype=torch.float16)
    f32.save(tmp_path / "int8", dtype="int8")
    size = {d: (tmp_path / d / "model.safetensors").stat().st_size for d in ("half", "int8")}
    assert size["int8"] < 0.62 * size["half"], size
    assert any(v.dtype == torch.int8 for v in load_file(tmp_path / "int8" / "model.safetensors").values())
    q = Unisono.load(tmp_path / "int8")
    assert q.dtype == torch.float32 and not q.quantized
    ids = torch.randint(0, f32.vocab.n_text, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = f32.decoder(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        b = q.decoder(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert not torch.equal(a, b)
    assert torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).min() > 0.999
    with pytest.raises(ValueError, match="int8"):
        f32.save(tmp_path / "bad", dtype="int4")
