"""A codebook on disk: read from an exported codec folder or a run's tokenizer.safetensors; tokens by
the tokenizer's own rule, in blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unisono.codec import CodecConfig, SpeechCodec
from unisono.codec.codebook import assign_tokens, read_codebook, write_codebook
from unisono.codec.config import SpeakerEncoderConfig, Token2MelConfig, VocoderConfig


def test_a_codebook_is_read_back_from_a_run_or_a_codec_folder(tmp_path):
    torch.manual_seed(0)
    centroids = torch.randn(16, 6)
    write_codebook(tmp_path / "run", centroids, layer=3)
    book = read_codebook(tmp_path / "run")
    assert torch.equal(book.centroids, centroids) and book.layer == 3 and book.settings is None

    config = CodecConfig(speaker=SpeakerEncoderConfig(channels=16, n_layers=2, dim=8),
                         token2mel=Token2MelConfig(dim=32, n_layers=2, n_heads=2, ffn_dim=64),
                         vocoder=VocoderConfig(dim=32, intermediate_dim=64, n_layers=2))
    config.tokenizer.codebook_size, config.tokenizer.layer = 16, 2
    SpeechCodec(config, centroids=centroids).save(tmp_path / "speech")  # float16 on disk
    book = read_codebook(tmp_path / "speech")
    assert torch.equal(book.centroids, centroids.half().float()) and book.layer == 2
    assert book.settings.to_dict() == config.to_dict()
    with pytest.raises(FileNotFoundError, match="holds no codebook"):
        read_codebook(tmp_path)


def test_tokens_are_the_nearest_centroids_whatever_the_block():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, 6)).astype(np.float16)
    centroids = torch.from_numpy(rng.normal(size=(9, 6)).astype(np.float32))
    nearest = torch.cdist(torch.from_numpy(features.astype(np.float32)), centroids).argmin(-1).numpy()
    for block in (1, 7, 50, 1000):
        np.testing.assert_array_equal(assign_tokens(features, centroids, block=block), nearest)
