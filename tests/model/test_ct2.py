"""CTranslate2 reader and Whisper converter, checked against ctranslate2 itself.

- The reader/mapping round trip goes through ctranslate2's own converter (HF -> CT2 -> HF).
- The bundled tiny.en, converted, must reproduce ctranslate2's encoder output and decoder logits
  on real speech.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from tests.conftest import read_manifest

from unisono.model.ct2 import (
    CT2FormatError,
    bundled_whisper_path,
    convert_ct2_whisper,
    load_ct2_whisper,
    read_ct2_model,
    read_ct2_variables,
)

ctranslate2 = pytest.importorskip("ctranslate2")
transformers = pytest.importorskip("transformers")
sf = pytest.importorskip("soundfile")


@pytest.fixture(scope="module")
def tiny_hf_whisper(tmp_path_factory):
    """A random 2-layer Whisper saved as a Hugging Face directory with the real Whisper tokenizer."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

    path = tmp_path_factory.mktemp("hf_tiny")
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(bundled_whisper_path() / "tokenizer.json"))
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=100, max_target_positions=64, num_mel_bins=80,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random, non-zero biases so that every bias is really checked
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


def _ct2_convert(src, dst, quantization=None):
    ctranslate2.converters.TransformersConverter(str(src)).convert(str(dst), quantization=quantization, force=True)
    return dst


def test_round_trip_through_ctranslate2_converter(tiny_hf_whisper, tmp_path):
    src, model, tokenizer = tiny_hf_whisper
    ct2_dir = _ct2_convert(src, tmp_path / "ct2")

    header = read_ct2_model(ct2_dir)
    assert header.spec_name == "WhisperSpec"
    assert header.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"

    config, state = load_ct2_whisper(ct2_dir)
    reference = model.state_dict()
    assert set(state) == set(reference)
    for name, value in reference.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (64, 2, 2)
    assert config.decoder_start_token_id == tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    assert config.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")


@pytest.mark.parametrize("quantization", ["float16", "int8"])
def test_reduced_precision_models(tiny_hf_whisper, tmp_path, quantization):
    src, model, _ = tiny_hf_whisper
    ct2_dir = _ct2_convert(src, tmp_path / quantization, quantization)
    raw = read_ct2_variables(ct2_dir)  # stored dtypes
    stored = raw["encoder/layer_0/ffn/linear_0/weight"].dtype
    assert stored == (np.float16 if quantization == "float16" else np.int8)

    _, state = load_ct2_whisper(ct2_dir)
    ref = model.state_dict()["model.encoder.layers.0.fc1.weight"]
    got = state["model.encoder.layers.0.fc1.weight"]
    if quantization == "float16":
        torch.testing.assert_close(got, ref.half().float(), rtol=0, atol=0)
    else:  # int8: one scale per row, round to nearest -> error <= half a step (max|row| / 127 / 2)
        step = ref.abs().amax(dim=1, keepdim=True) / 127
        assert bool(((got - ref).abs() <= step * 0.5 + 1e-6).all())


def test_corrupt_model_bin_gives_typed_errors(tmp_path):
    good = (bundled_whisper_path() / "model.bin").read_bytes()
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "model.bin").write_bytes(good[:5000])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_model(truncated)

    bad_version = tmp_path / "bad_version.bin"
    bad_version.write_bytes(struct.pack("<I", 99) + good[4:200])
    with pytest.raises(CT2FormatError, match="binary version 99"):
        read_ct2_model(bad_version)

    with pytest.raises(FileNotFoundError):
        read_ct2_model(tmp_path / "missing")


def test_fp16_kept_or_cast():
    kept = read_ct2_variables(bundled_whisper_path())
    cast = read_ct2_variables(bundled_whisper_path(), float32=True)
    name = "encoder/conv1/weight"
    assert kept[name].dtype == np.float16 and cast[name].dtype == np.float32
    np.testing.assert_array_equal(kept[name].astype(np.float32), cast[name])
    # The tied projection is an alias of the embeddings.
    assert kept["decoder/projection/weight"] is kept["decoder/embeddings/weight"]


def _real_clips(real_speech_dir):
    rows = [
        read_manifest(real_speech_dir / "ljspeech_lj001" / "manifest.jsonl")[0],
        read_manifest(real_speech_dir / "an4_test" / "manifest.jsonl")[0],
    ]
    sets = ["ljspeech_lj001", "an4_test"]
    return [sf.read(real_speech_dir / s / r["audio"], dtype="float32")[0] for s, r in zip(sets, rows)]


@pytest.mark.slow
def test_bundled_tiny_en_matches_ctranslate2(real_speech_dir, tmp_path, capsys):
    """Encoder output and decoder logits of the converted model vs ctranslate2 (float32)."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    clips = _real_clips(real_speech_dir)
    features = WhisperFeatureExtractor(feature_size=80)(clips, sampling_rate=16000, return_tensors="np").input_features
    ct2_model = ctranslate2.models.Whisper(str(bundled_whisper_path()), device="cpu", compute_type="float32")
    ct2_encoded = np.array(ct2_model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))

    # The converted directory, loaded the standard transformers way.
    hf_dir = convert_ct2_whisper(bundled_whisper_path(), tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in hf_dir.iterdir()}
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        encoded = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    enc_diff = float(np.abs(encoded - ct2_encoded).max())
    assert enc_diff < 1e-3

    # Decoder: ctranslate2's greedy tokens and its per-step logits, teacher-forced through HF.
    prompt = [model.config.decoder_start_token_id, 50362]  # <|startoftranscript|> <|notimestamps|>
    results = ct2_model.generate(
        ctranslate2.StorageView.from_array(features), [prompt] * len(clips), beam_size=1, max_length=64,
        return_logits_vocab=True, suppress_blank=False, suppress_tokens=[],
    )
    logit_diffs = []
    for i, result in enumerate(results):
        tokens = result.sequences_ids[0]
        assert len(tokens) > 3  # real speech: a real transcript
        ct2_logits = np.array(result.logits[0])  # (steps, vocab)
        with torch.no_grad():
            logits = model(
                input_features=torch.from_numpy(features[i : i + 1]), decoder_input_ids=torch.tensor([prompt + tokens])
            ).logits[0].numpy()
        logits = logits[len(prompt) - 1 : len(prompt) - 1 + len(ct2_logits)]  # the generated steps
        logit_diffs.append(float(np.abs(logits - ct2_logits).max()))
        # Greedy choices agree token for token (the last step predicts end-of-text).
        assert logits.argmax(-1).tolist()[: len(tokens)] == tokens
    assert max(logit_diffs) < 1e-3
    with capsys.disabled():
        print(f"\n[ct2] encoder max|diff| {enc_diff:.2e}, decoder logits max|diff| {max(logit_diffs):.2e}")


def test_convert_cli(tiny_hf_whisper, tmp_path):
    from typer.testing import CliRunner

    from unisono.model.cli import app

    src, model, _ = tiny_hf_whisper
    ct2_dir = _ct2_convert(src, tmp_path / "ct2")
    runner = CliRunner()
    for source, dst in [(ct2_dir, tmp_path / "from_ct2"), (src, tmp_path / "from_hf")]:
        result = runner.invoke(app, ["whisper", str(source), str(dst)])
        assert result.exit_code == 0, result.output
        assert json.loads((dst / "config.json").read_text())["model_type"] == "whisper"
        _, state = load_ct2_whisper(ct2_dir)
        from safetensors.torch import load_file

        written = load_file(dst / "model.safetensors")
        torch.testing.assert_close(written["model.encoder.conv1.weight"], state["model.encoder.conv1.weight"])
    result = runner.invoke(app, ["whisper", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert result.exit_code != 0
