"""The k-means codebook: every frame gets its nearest centroid, clip weights steer the fit, a reused
codebook keeps its token ids."""

from __future__ import annotations

import numpy as np
import torch

from tests.train.conftest import CODEC_D
from unisono.codec.codebook import TOKENIZER_FILE, assign_tokens, read_codebook
from unisono.train.codec_data import CodecData
from unisono.train.codec_kmeans import TOKENS_FILE, fit_codebook, tokenize_data


def quiet(_: str) -> None:
    pass


def test_fit_tokenizer_assigns_every_frame_its_nearest_centroid(prepared, tmp_path):
    data = CodecData(prepared / "data", layer=2)
    centroids = fit_codebook(data, codebook_size=8, log=quiet)
    tokens = tokenize_data(data, tmp_path, centroids, log=quiet)
    assert len(tokens) == data.total_tokens
    np.testing.assert_array_equal(np.load(tmp_path / TOKENS_FILE), tokens)
    feats = torch.from_numpy(np.asarray(data.features, dtype=np.float32))
    np.testing.assert_array_equal(tokens, torch.cdist(feats, centroids).argmin(-1).numpy())
    np.testing.assert_array_equal(assign_tokens(data.features, centroids, block=7), tokens)
    book = read_codebook(tmp_path)  # the run's tokenizer.safetensors
    assert torch.equal(book.centroids, centroids) and book.layer == 2 and book.settings is None


def test_clip_weights_give_a_heavier_clip_more_of_the_codebook(prepared):
    data = CodecData(prepared / "data", layer=2)
    plain = fit_codebook(data, codebook_size=8, log=quiet)
    ones = fit_codebook(data, codebook_size=8, log=quiet, clip_weights=np.ones(len(data)))
    assert torch.equal(plain, ones)  # weights of one are no weights
    # features with a clear answer: the first clip's frames in 8 tight clusters of their own, the rest in 8 others
    rng = np.random.default_rng(0)
    n_first = data.clips[0]["tokens"]
    centres = rng.normal(0, 10, (16, CODEC_D)).astype(np.float32)
    which = np.concatenate([rng.integers(0, 8, n_first), rng.integers(8, 16, data.total_tokens - n_first)])
    data.features = centres[which] + rng.normal(0, 0.1, (data.total_tokens, CODEC_D)).astype(np.float32)
    first, rest = torch.from_numpy(data.features[:n_first]), torch.from_numpy(data.features[n_first:])
    error = lambda f, c: float(torch.cdist(f, c).min(-1).values.pow(2).mean())  # noqa: E731
    even = fit_codebook(data, codebook_size=8, log=quiet)
    heavy = np.ones(len(data))
    heavy[0] = 1000.0
    weighted = fit_codebook(data, codebook_size=8, log=quiet, clip_weights=heavy)
    assert error(first, weighted) < 0.1 * error(first, even)  # the heavy clip takes the codebook
    assert error(rest, weighted) > 10 * error(rest, even)  # from the others


def test_a_reused_codebook_keeps_its_token_ids_on_new_data(prepared, tmp_path):
    data = CodecData(prepared / "data", layer=2)
    centroids = fit_codebook(data, codebook_size=8, log=quiet)
    tokens = tokenize_data(data, tmp_path / "a", centroids, log=quiet)
    permuted = centroids.flip(0)  # another codebook: its ids must survive as they are, not be refitted
    np.testing.assert_array_equal(tokenize_data(data, tmp_path / "b", permuted, log=quiet), 7 - tokens)
    assert torch.equal(read_codebook(tmp_path / "b").centroids, permuted)
    assert (tmp_path / "b" / TOKENIZER_FILE).is_file()
    import pytest

    with pytest.raises(ValueError, match="does not fit"):
        tokenize_data(data, tmp_path / "c", torch.zeros(8, CODEC_D + 1), log=quiet)
