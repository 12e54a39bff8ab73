"""Speech tokenizer on the bundled Whisper tiny.en encoder: token counts, nearest-centroid rule,
batch invariance, long clips, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unisono.codec.config import TokenizerConfig
from unisono.codec.tokenizer import SpeechTokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tokenizer() -> SpeechTokenizer:
    torch.manual_seed(0)
    return SpeechTokenizer(TokenizerConfig(codebook_size=64), centroids=torch.randn(64, 384))


@pytest.fixture(scope="module")
def speech(real_speech_dir) -> np.ndarray:
    from unisono.audio.io import load_audio

    return load_audio(real_speech_dir / "ljspeech_lj001/wav/LJ001-0002.wav")


def _voice_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_token_count_is_ceil_of_samples_over_640(tokenizer):
    clips = [_voice_like(s, i) for i, s in enumerate((0.05, 1.0, 1.01, 2.345))]
    tokens = tokenizer.encode(clips)
    assert [len(t) for t in tokens] == [int(np.ceil(len(c) / 640)) for c in clips]
    assert tokenizer.config.token_rate == 25.0


def test_quantize_is_the_nearest_centroid(tokenizer):
    x = torch.randn(200, 384)
    brute = torch.cdist(x, tokenizer.centroids).argmin(-1)
    assert torch.equal(tokenizer.quantize(x), brute)
    assert torch.equal(tokenizer.quantize(tokenizer.centroids), torch.arange(64))


def test_a_clip_gets_the_same_tokens_alone_and_in_a_batch(tokenizer, speech):
    other = _voice_like(1.3, 3)
    alone = tokenizer.encode(speech)
    batched = tokenizer.encode([other, speech])
    assert torch.equal(batched[1], alone)
    assert torch.equal(tokenizer.encode(speech), alone)  # deterministic


def test_intermediate_layer_features_come_from_that_layer(tokenizer, speech):
    feats = tokenizer.layer_features([speech[:16000]], (2, 3, 4))[0]
    assert feats[2].shape == feats[3].shape == feats[4].shape == (25, 384)
    assert not torch.allclose(feats[2], feats[4]) and not torch.allclose(feats[3], feats[4])
    assert tokenizer.config.layer == 3
    assert torch.allclose(tokenizer.features([speech[:16000]])[0], feats[3])


def test_clips_over_the_encoder_window_are_cut_into_30_s_windows(tokenizer, speech):
    long = np.concatenate([speech] * int(np.ceil(31 * 16000 / len(speech))))[: 31 * 16000]
    tokens = tokenizer.encode(long)
    assert len(tokens) == 775
    assert torch.equal(tokens[:750], tokenizer.encode(long[:480000]))


def test_streamed_tokens_agree_with_offline_when_the_window_holds_the_whole_clip(speech):
    torch.manual_seed(0)
    tok = SpeechTokenizer(TokenizerConfig(codebook_size=64, lookahead_tokens=1000), centroids=torch.randn(64, 384))
    stream = tok.stream()
    parts = [stream.push(speech[i:i + 3000]) for i in range(0, len(speech), 3000)]
    assert all(len(p) == 0 for p in parts)  # the look-ahead is never heard before the end
    assert torch.equal(stream.flush(), tok.encode(speech))


def test_streamed_tokens_come_as_audio_arrives(tokenizer, speech):
    stream = tokenizer.stream()
    counts = [len(stream.push(speech[i:i + 6400])) for i in range(0, len(speech), 6400)]
    total = sum(counts) + len(stream.flush())
    assert total == int(np.ceil(len(speech) / 640))
    assert counts[0] == 10 - tokenizer.config.lookahead_tokens and sum(counts) > 0


def test_empty_audio_is_refused(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        tokenizer.encode(np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match="layers 1..4"):
        SpeechTokenizer(TokenizerConfig(layer=5), encoder=tokenizer.encoder)


def test_a_tokens_feature_is_the_mean_of_its_two_encoder_frames(tokenizer, speech):
    from dataclasses import replace

    clip = speech[:16000 + 320]  # 26 tokens, the last with one encoder frame: it is repeated
    pooled = tokenizer.features([clip])[0]
    frames = SpeechTokenizer(replace(tokenizer.config, pool=1, codebook_size=1), encoder=tokenizer.encoder,
                             centroids=torch.zeros(1, 384)).features([clip])[0]  # (51, 384) encoder frames
    assert pooled.shape == (26, 384) and tokenizer.feature_dim == 384
    torch.testing.assert_close(pooled[:25], (frames[0:50:2] + frames[1:50:2]) / 2)
    torch.testing.assert_close(pooled[25], frames[50])
    with pytest.raises(ValueError, match=r"expected \(64, 384\)"):
        SpeechTokenizer(tokenizer.config, encoder=tokenizer.encoder, centroids=torch.randn(64, 768))
