"""Shared fixtures: the real speech sets that sit beside the checkout, and small real clips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_WAV = REPO / "examples" / "lj001-0001.wav"
EXAMPLE_TEXT = ("Printing, in the only sense with which we are at present concerned, differs from most if not from all "
                "the arts and crafts represented in the Exhibition")  # what EXAMPLE_WAV says (LJ001-0001)


def _shared_dir() -> Path | None:
    """../shared beside the checkout (or $UNISONO_SHARED): the real speech sets live there."""
    candidates = [os.environ.get("UNISONO_SHARED"), REPO.parent / "shared", REPO / "shared", "/work/shared"]
    for c in candidates:
        if c and (Path(c) / "data" / "real_speech").is_dir():
            return Path(c)
    return None


SHARED = _shared_dir()


@pytest.fixture(scope="session")
def real_speech_dir() -> Path:
    if SHARED is None:
        pytest.skip("real speech sets not found: set UNISONO_SHARED to the folder holding data/real_speech")
    return SHARED / "data" / "real_speech"


@pytest.fixture(scope="session")
def real_speech_train_dir() -> Path:
    if SHARED is None:
        pytest.skip("real speech sets not found: set UNISONO_SHARED to the folder holding data/real_speech_train")
    return SHARED / "data" / "real_speech_train"


def read_manifest(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def example_wav() -> Path:
    return EXAMPLE_WAV


# ---- tiny models built from configs ----------------------------------------------------------
SENTENCES = [
    "printing in the only sense with which we are at present concerned",
    "the quick brown fox jumps over the lazy dog",
    "one two three four five six seven eight nine zero",
    "speech recognition with verified multi token decoding",
    "今天天气很好 我们去公园散步",
    "北京是中国的首都",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from unisono.model.vocab import train_text_tokenizer

    return train_text_tokenizer(SENTENCES * 4, vocab_size=300, min_frequency=1)


def make_tiny_model(tokenizer, family: str = "qwen3", seed: int = 0, **overrides):
    import torch

    from unisono.model.config import UnisonoConfig
    from unisono.model.unisono import Unisono
    from unisono.model.vocab import Vocab

    torch.manual_seed(seed)
    cfg = UnisonoConfig.from_name("unisono-test", **overrides)
    cfg.decoder.family = family
    if family == "qwen3_moe":
        cfg.decoder.hf.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, decoder_sparse_step=1)
    if family == "llama":
        cfg.decoder.hf.pop("head_dim", None)
    model = Unisono(cfg, Vocab(tokenizer, cfg.vocab.n_speech_tokens))
    return model.eval()
