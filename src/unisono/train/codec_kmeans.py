"""The tokenizer's codebook: k-means (scikit-learn's MiniBatchKMeans) on the pooled encoder features of
a prepared data folder, then every stored frame's token.

    run/
      codec.json              the codec's settings (codebook size, layer ...)
      tokenizer.safetensors   the centroids (K, D) and the layer they quantise (unisono.codec.codebook)
      tokens.npy              int16 tokens of every stored frame, in the data folder's order
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from unisono.codec.codebook import assign_tokens, write_codebook
from unisono.train.codec_data import CodecData

TOKENS_FILE = "tokens.npy"


def fit_codebook(data: CodecData, codebook_size: int, max_frames: int = 300_000, seed: int = 0, inits: int = 3,
                 iterations: int = 100, clip_weights: np.ndarray | None = None,
                 log: Callable[[str], None] = print) -> torch.Tensor:
    """(K, D) centroids fitted on a seeded sample of the stored features. With `clip_weights` (one per
    clip, e.g. `CodecData.draw_weights`) each frame weighs as its clip does."""
    from sklearn.cluster import MiniBatchKMeans

    if data.features is None:
        raise ValueError("open the data folder at the tokenizer's layer to fit a codebook")
    feats = data.features
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(feats.shape[0], size=min(max_frames, feats.shape[0]), replace=False))
    sample = np.asarray(feats[take], dtype=np.float32)
    frame_weights = None
    if clip_weights is not None:
        starts = np.array([c["feature_offset"] for c in data.clips])  # clips are stored in order, back to back
        frame_weights = np.asarray(clip_weights, dtype=np.float64)[np.searchsorted(starts, take, side="right") - 1]
    t0 = time.time()
    km = MiniBatchKMeans(n_clusters=codebook_size, batch_size=8192, n_init=inits, max_iter=iterations, random_state=seed,
                         reassignment_ratio=0.001)
    km.fit(sample, sample_weight=frame_weights)
    log(f"k-means: {codebook_size} centroids on {len(sample)} frames in {time.time() - t0:.0f} s, "
        f"inertia/frame {km.inertia_ / len(sample):.2f}")
    return torch.from_numpy(km.cluster_centers_.astype(np.float32))


def tokenize_data(data: CodecData, run: Path, centroids: torch.Tensor, log: Callable[[str], None] = print) -> np.ndarray:
    """Store the codebook in the run and the tokens of every stored frame (tokens.npy). Given another
    codec's centroids, it tokenizes new data without changing the codebook, so token ids keep their
    meaning for the models already trained on them."""
    if data.features is None or data.layer is None:
        raise ValueError("open the data folder at the tokenizer's layer to tokenize it")
    if centroids.shape[1] != data.features.shape[1]:
        raise ValueError(f"a codebook of {centroids.shape[1]}-wide entries does not fit the {data.features.shape[1]}-wide "
                         f"features of {data.directory}")
    write_codebook(run, centroids, data.layer)
    tokens = assign_tokens(data.features, centroids)
    np.save(run / TOKENS_FILE, tokens)
    used = np.bincount(tokens, minlength=len(centroids))
    p = used[used > 0] / used.sum()
    log(f"codebook use: {int((used > 0).sum())}/{len(centroids)} entries, perplexity {math.exp(-(p * np.log(p)).sum()):.0f}")
    return tokens
