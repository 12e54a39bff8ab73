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

