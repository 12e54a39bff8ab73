"""Shared fixtures: the real speech sets that sit beside the checkout, and small real clips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_WAV = REPO / "examples" / "lj001-0001.wav"


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
