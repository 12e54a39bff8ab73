"""AudioEncoder against ctranslate2's Whisper encoder, padded and variable-length, batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import read_manifest

from unisono.model.config import EncoderConfig
from unisono.model.ct2 import bundled_whisper_path
from unisono.model.encoder import AudioEncoder, output_lengths

ctranslate2 = pytest.importorskip("ctranslate2")
sf = pytest.importorskip("soundfile")


@pytest.fixture(scope="module")
def encoder():
    return AudioEncoder.from_source("bundled:whisper-tiny.en")


@pytest.fixture(scope="module")
def ct2_whisper():
    return ctranslate2.models.Whisper(str(bundled_whisper_path()), device="cpu", compute_type="float32")


def _ct2_encode(model, mel: np.ndarray) -> np.ndarray:
    return np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, np.float32)), to_cpu=True))


@pytest.fixture(scope="module")
def an4_clips(real_speech_dir):
    """Three short real clips (AN4 test, 2-5 s) and their reference log-mel (transformers)."""
    from transformers import WhisperFeatureExtractor

    rows = read_manifest(real_speech_dir / "an4_test" / "manifest.jsonl")[:3]
    audios = [sf.read(real_speech_dir / "an4_test" / r["audio"], dtype="float32")[0] for r in rows]
    extractor = WhisperFeatureExtractor(feature_size=80)
    padded = [extractor(a, sampling_rate=16000, return_tensors="np").input_features[0] for a in audios]
    frames = [len(a) // 160 for a in audios]  # mel frames of the real audio (100 Hz)
    return audios, padded, frames


@pytest.mark.slow
def test_padded_regime_matches_ctranslate2(encoder, ct2_whisper, an4_clips, capsys):
    _, padded, _ = an4_clips
    mel = np.stack(padded[:2])  # (2, 80, 3000)
    encoder.config.variable_length = False
    try:
        out, lengths = encoder(torch.from_numpy(mel))
    finally:
        encoder.config.variable_length = True
    ref = _ct2_encode(ct2_whisper, mel)
    diff = float(np.abs(out.numpy() - ref).max())
    assert out.shape == (2, 1500, 384) and lengths.tolist() == [1500, 1500]
    assert diff < 1e-3
    with capsys.disabled():
        print(f"\n[encoder] padded regime vs ctranslate2 encode: max|diff| {diff:.2e}")


def test_variable_length_matches_ctranslate2_and_is_cheaper(encoder, ct2_whisper, an4_clips, capsys):
    """ctranslate2 also encodes unpadded input with sliced positions: it is the reference here."""
    _, padded, frames = an4_clips
    mel = padded[0][None, :, : frames[0]]  # (1, 80, T) real frames only, T ~ 400 for 4 s
    out, lengths = encoder(torch.from_numpy(mel))
    ref = _ct2_encode(ct2_whisper, mel)
    diff = float(np.abs(out.numpy() - ref).max())
    assert out.shape[1] == lengths.item() == (frames[0] + 1) // 2
    assert diff < 1e-3
    assert torch.isfinite(out).all()

    # Work: the padded regime runs 1500 positions through every layer, this one ~200.
    encoder.config.variable_length = False
    try:
        out_padded, _ = encoder(torch.from_numpy(padded[0][None]))
    finally:
        encoder.config.variable_length = True
    assert out_padded.shape[1] / out.shape[1] > 5
    # Leading frames: close in direction to the padded regime, not equal (attention sees no silence).
    n = out.shape[1]
    a, b = out[0], out_padded[0, :n]
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    rel = float((a - b).norm() / b.norm())
    assert cosine.mean() > 0.8
    with capsys.disabled():
        print(
            f"\n[encoder] variable-length vs ctranslate2 (unpadded): max|diff| {diff:.2e}; frames {n} vs 1500 "
            f"({1500 / n:.1f}x fewer); vs padded regime on leading frames: max|diff| {float((a - b).abs().max()):.2f}, "
            f"relative L2 {rel:.3f}, mean cosine {float(cosine.mean()):.3f}"
        )


def test_batch_of_different_lengths_equals_each_alone(encoder, an4_clips):
    _, padded, frames = an4_clips
    mels = [torch.from_numpy(p[:, :t].copy()) for p, t in zip(padded, frames)]
    T = max(frames)
    # Padding filled with garbage: masking must make it irrelevant.
    batch = torch.full((len(mels), 80, T), 3.0)
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m
    out, lengths = encoder(batch, torch.tensor(frames))
    assert lengths.tolist() == [(t + 1) // 2 for t in frames]
    for i, m in enumerate(mels):
        alone, _ = encoder(m[None])
        n = lengths[i]
        torch.testing.assert_close(out[i, :n], alone[0], rtol=0, atol=1e-4)
        assert out[i, n:].abs().max() == 0 if n < out.shape[1] else True


def test_padded_regime_pads_like_the_feature_extractor(encoder, an4_clips):
    """Unpadded mel + lengths in padded mode ~= the extractor's own 30 s padding."""
    _, padded, frames = an4_clips
    encoder.config.variable_length = False
    try:
        from_extractor, _ = encoder(torch.from_numpy(padded[1][None]))
        short = torch.from_numpy(padded[1][None, :, : frames[1]].copy())
        from_short, lengths = encoder(short, torch.tensor([frames[1]]))
    finally:
        encoder.config.variable_length = True
    assert lengths.tolist() == [(frames[1] + 1) // 2]
    # Only the STFT frames at the boundary differ (reflect vs zero padding of the signal).
    assert float((from_short - from_extractor).abs().mean()) < 0.05


def test_frozen_by_default_and_stays_in_eval(encoder):
    assert encoder.config.frozen
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.whisper.layers[0].training


def test_trainable_encoder_gets_gradients():
    enc = AudioEncoder(EncoderConfig(d_model=32, n_layers=1, n_heads=2, ffn_dim=64, frozen=False))
    enc.train()
    assert enc.training
    out, _ = enc(torch.randn(2, 80, 50), torch.tensor([50, 31]))
    out.sum().backward()
    assert enc.whisper.conv1.weight.grad is not None


def test_state_dict_round_trip(encoder):
    mel = torch.randn(1, 80, 120)
    copy = AudioEncoder(EncoderConfig(**{**encoder.config.__dict__, "source": None}))
    copy.load_encoder_state_dict(encoder.encoder_state_dict())
    torch.testing.assert_close(copy(mel)[0], encoder(mel)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="missing"):
        copy.load_encoder_state_dict({"conv1.weight": encoder.whisper.conv1.weight})


def test_from_hf_directory_and_load_source_weights(encoder, tmp_path):
    from unisono.model.whisper_source import convert_whisper

    hf_dir = convert_whisper("bundled:whisper-tiny.en", tmp_path / "hf")
    from_hf = AudioEncoder.from_source(str(hf_dir))
    mel = torch.randn(1, 80, 64)
    torch.testing.assert_close(from_hf(mel)[0], encoder(mel)[0], rtol=0, atol=0)

    blank = AudioEncoder(EncoderConfig())
    assert not torch.equal(blank(mel)[0], encoder(mel)[0])
    blank.load_source_weights(bundled_whisper_path())  # a CTranslate2 directory
    torch.testing.assert_close(blank(mel)[0], encoder(mel)[0], rtol=0, atol=0)


def test_bad_inputs_and_mismatched_config(encoder):
    with pytest.raises(ValueError, match="3000"):
        encoder(torch.zeros(1, 80, 3002))
    with pytest.raises(ValueError, match="n_mels|80"):
        encoder(torch.zeros(1, 128, 100))
    with pytest.raises(ValueError, match="d_model: config 512 vs source 384"):
        AudioEncoder.from_source("bundled:whisper-tiny.en", EncoderConfig(d_model=512, n_heads=8))
    with pytest.raises(ValueError, match="bundled"):
        AudioEncoder.from_source("bundled:whisper-huge")
    with pytest.raises(FileNotFoundError):
        AudioEncoder.from_source("/nonexistent/whisper")


def test_output_lengths_match_conv_arithmetic():
    conv = torch.nn.Conv1d(1, 1, kernel_size=3, stride=2, padding=1)
    for t in [1, 2, 3, 399, 400, 3000]:
        assert output_lengths(torch.tensor([t])).item() == conv(torch.zeros(1, 1, t)).shape[-1]
