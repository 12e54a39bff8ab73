"""A codebook on disk: the entries the tokenizer quantises with, and where they come from.

Two places hold one: an exported codec folder (`SpeechCodec.save`: config.json + codec.safetensors,
e.g. the shipped model's speech/), and a codec training run (tokenizer.safetensors: the centroids,
with the encoder layer they quantise in its metadata). `read_codebook` reads either, so new data can
be tokenized with the codebook of a shipped codec and its token ids keep their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unisono.codec.config import CodecConfig

TOKENIZER_FILE = "tokenizer.safetensors"


@dataclass
class Codebook:
    """Entries (K, D), the encoder layer they quantise, and the codec settings where they come
    from an exported codec folder."""

    centroids: torch.Tensor
    layer: int
    settings: CodecConfig | None = None


def read_codebook(path: str | Path) -> Codebook:
    """The codebook of an exported codec folder or of a training run (its tokenizer.safetensors)."""
    from safetensors import safe_open

    from unisono.codec.codec import CONFIG_FILE, SpeechCodec

    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        codec = SpeechCodec.load(path)
        return Codebook(codec.centroids.float(), codec.config.tokenizer.layer, codec.config)
    source = path / TOKENIZER_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{path} holds no codebook: neither a codec folder ({CONFIG_FILE}) nor a run ({TOKENIZER_FILE})")
    with safe_open(str(source), "pt") as f:
        return Codebook(f.get_tensor("centroids").float(), int(f.metadata()["layer"]))


def write_codebook(directory: str | Path, centroids: torch.Tensor, layer: int) -> Path:
    """A run's tokenizer.safetensors: the centroids, and the layer they quantise."""
    from safetensors.torch import save_file

    path = Path(directory) / TOKENIZER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"centroids": centroids.float().contiguous()}, str(path),
              metadata={"layer": str(layer), "codebook_size": str(len(centroids))})
    return path


def assign_tokens(features: np.ndarray, centroids: torch.Tensor, block: int = 65536) -> np.ndarray:
    """The token of every row of (N, D) features (the tokenizer's rule: the nearest centroid), int16,
    computed in blocks so that a memory-mapped feature file is never read whole."""
    from unisono.codec.tokenizer import quantize

    out = np.empty(features.shape[0], dtype=np.int16)
    for s in range(0, features.shape[0], block):
        x = torch.from_numpy(np.asarray(features[s:s + block], dtype=np.float32))
        out[s:s + block] = quantize(x, centroids).numpy().astype(np.int16)
    return out
