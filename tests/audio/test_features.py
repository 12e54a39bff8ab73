"""Log-mel features against transformers' WhisperFeatureExtractor on real speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import read_manifest

from unisono.audio.features import WHISPER_WINDOW_SAMPLES, batch_log_mel, log_mel, n_frames
from unisono.audio.io import load_audio


@pytest.fixture(scope="module")
def clips(real_speech_dir):
    rows = read_manifest(real_speech_dir / "an4_test" / "manifest.jsonl")[:3]
    return [load_audio(real_speech_dir / "an4_test" / r["audio"]) for r in rows]


@pytest.mark.parametrize("n_mels", [80, 128])
def test_padded_features_equal_whisper_feature_extractor(clips, n_mels):
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    for audio in clips:
        ref = extractor(audio, sampling_rate=16000, return_tensors="np").input_features[0]  # (n_mels, 3000)
        ours = log_mel(audio, n_mels=n_mels, pad_to_samples=WHISPER_WINDOW_SAMPLES).numpy()
        assert ours.shape == ref.shape == (n_mels, 3000)
        assert np.abs(ours - ref).max() < 1e-4


def test_variable_length_features_equal_extractor_on_real_frames(clips):
    """Unpadded, each clip keeps N // 160 frames; they match the extractor's on the interior."""
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=80)
    audio = clips[0]
    ref = extractor(audio, sampling_rate=16000, return_tensors="np").input_features[0]
    ours = log_mel(audio).numpy()
    assert ours.shape == (80, len(audio) // 160) == (80, n_frames(len(audio)))
    # the last two frames see reflection padding instead of Whisper's trailing zeros
    assert np.abs(ours[:, :-2] - ref[:, : ours.shape[1] - 2]).max() < 1e-4


def test_batch_equals_one_by_one(clips):
    mel, lengths = batch_log_mel(clips)
    assert mel.shape[0] == len(clips) and mel.shape[2] == int(lengths.max())
    for i, audio in enumerate(clips):
        alone = log_mel(audio)
        assert lengths[i] == alone.shape[1]
        torch.testing.assert_close(mel[i, :, : lengths[i]], alone, rtol=0, atol=0)
        assert (mel[i, :, lengths[i] :] == 0).all()


def test_tiny_clip_gets_at_least_two_frames():
    mel = log_mel(np.full(50, 0.1, np.float32))
    assert mel.shape == (80, 2) and torch.isfinite(mel).all()


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        batch_log_mel([])
