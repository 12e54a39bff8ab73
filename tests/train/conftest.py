"""Fixtures for the training tests: a small corpus on disk and stage configs for tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SENTENCES

N_SPEECH = 64  # the unisono-test config's speech codebook


def write_corpus(folder: Path, n: int = 8, seed: int = 0, real_dir: Path | None = None, n_real: int = 0) -> Path:
    """A manifest of short tone-and-noise clips (and optionally a few real training clips), with
    the fields every task reads: speech tokens, speakers, conversations, tiers, quality, synthesis rate."""
    from unisono.audio.io import save_audio

    rng = np.random.default_rng(seed)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        seconds = 0.6 + 0.1 * (i % 5)
        t = np.arange(int(seconds * 16000)) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (200 + 60 * i) * t) + 0.02 * rng.standard_normal(t.size)
        save_audio(folder / "wav" / f"c{i}.wav", audio.astype(np.float32))
        text = SENTENCES[i % len(SENTENCES)]
        rows.append({
            "id": f"c{i}", "audio": f"wav/c{i}.wav", "text": text,
            "language": "zh" if not text.isascii() else "en", "duration": round(seconds, 3),
            "speaker": f"spk{i % 2}", "conversation": f"conv{i // 2}",
            "speech_tokens": rng.integers(0, N_SPEECH, 6 + i).tolist(),
            "tier": "gold" if i % 4 else "silver", "quality": 0.9 if i % 3 else 0.3,
            "synth": {"rate": 120 if i % 2 else 230, "pitch": 50},
        })
    if real_dir is not None:
        from tests.conftest import read_manifest

        for r in read_manifest(real_dir / "manifest.jsonl")[:n_real]:
            rows.append({**r, "audio": str(real_dir / r["audio"])})
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def stage_overrides(stage: str, manifest: Path, steps: int = 2, init: str = "unisono-test", extra: tuple[str, ...] = ()) -> list[str]:
    """Overrides that shrink a shipped stage config to a tiny model, a tiny corpus and a few steps."""
    from unisono.train.config import default_config_path, load_config

    shipped = load_config(default_config_path(stage))
    sets = [
        f"model.init={init}",
        f"data.train=[{manifest}]",
        "data.max_tokens=600",
        "data.tiers=null",
        "data.min_quality=null",
        "run.checkpoint_every=1000",
        "run.threads=1",
        "model.tokenizer_vocab_size=300",
    ]
    if shipped.model.speech_tokens is not None:
        sets.append(f"model.speech_tokens={N_SPEECH}")
    for i, p in enumerate(shipped.phases):
        sets += [f"phases.{i}.steps={steps}", f"phases.{i}.warmup_steps=0"]
    sets += list(extra)
    return sets


def check_generator_losses(disc, fake, real) -> None:
    """The model's side of the adversarial term (`unisono.train.gan.generator_loss`), after a discriminator
    learnt to tell `fake` from `real`: the generated input is told to move, the real input and the
    discriminator are not, and feature matching is exactly zero on the real input itself."""
    from unisono.train.gan import generator_loss

    fake = fake.detach().clone().requires_grad_(True)
    real = real.detach().clone().requires_grad_(True)
    for p in disc.parameters():
        p.grad = None
    disc.requires_grad_(False)
    adversarial, matching = generator_loss(disc, fake, real)
    (adversarial + matching).backward()
    assert adversarial > 0.1 and matching > 0
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None and all(p.grad is None for p in disc.parameters())
    assert float(generator_loss(disc, real.detach(), real.detach())[1]) == 0.0



# ---- the speech codec's training ------------------------------------------------------------------
CODEC_D = 32  # the tiny encoder's width


def tiny_tokenizer():
    """A SpeechTokenizer on a tiny random 2-layer encoder (features of width CODEC_D)."""
    import torch

    from unisono.codec.config import TokenizerConfig
    from unisono.codec.tokenizer import SpeechTokenizer
    from unisono.model.config import EncoderConfig
    from unisono.model.encoder import AudioEncoder

    torch.manual_seed(0)
    enc = AudioEncoder(EncoderConfig(d_model=CODEC_D, n_layers=2, n_heads=2, ffn_dim=64))
    return SpeechTokenizer(TokenizerConfig(layer=2, codebook_size=8), encoder=enc, centroids=torch.zeros(8, CODEC_D))


def codec_config():
    """A tiny codec: 8 tokens of the tiny encoder's layer 2."""
    from unisono.codec.config import CodecConfig, SpeakerEncoderConfig, Token2MelConfig, VocoderConfig

    c = CodecConfig(
        speaker=SpeakerEncoderConfig(channels=16, n_layers=2, dim=8),
        token2mel=Token2MelConfig(dim=32, n_layers=2, n_heads=2, ffn_dim=64),
        vocoder=VocoderConfig(dim=32, intermediate_dim=64, n_layers=2),
    )
    c.tokenizer.layer, c.tokenizer.codebook_size = 2, 8
    return c


def write_codec_manifest(folder: Path, n: int, engines=("espeak-ng", "flite"), seed: int = 0) -> Path:
    """n tone clips of 1.0-1.45 s, three speakers, every fifth one augmented with noise."""
    from unisono.audio.io import save_audio

    rng = np.random.default_rng(seed)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        seconds = 1.0 + 0.15 * (i % 4)
        t = np.arange(int(seconds * 16000)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.01 * rng.standard_normal(t.size)
        save_audio(folder / "wav" / f"u{i}.wav", wave.astype(np.float32))
        rows.append({"id": f"u{i}", "audio": f"wav/u{i}.wav", "text": f"sentence number {i}", "language": "en",
                     "duration": seconds, "speaker": f"v{i % 3}",
                     "meta": {"engine": engines[i % len(engines)], "augment": [{"kind": "noise"}] if i % 5 == 4 else []}})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


def codec_prepare_config(manifest: Path):
    from unisono.train.codec_data import PrepareConfig, SourceSpec

    return PrepareConfig(sources=[SourceSpec(str(manifest), limit=None, languages=("en",))], layers=(1, 2),
                         test_source=str(manifest), test_clips=3)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A folder holding synth/ (14 clips) and data/ (prepared from it with the tiny encoder)."""
    from unisono.train.codec_data import prepare

    root = tmp_path_factory.mktemp("codec")
    manifest = write_codec_manifest(root / "synth", 14)
    prepare(codec_prepare_config(manifest), root / "data", tokenizer_factory=tiny_tokenizer, block_seconds=3.0)
    return root
