"""The mel discriminator of the token-to-mel model's adversarial term: paired patches, and losses
that teach it to tell a real mel from a smeared one while reaching only what they should."""

from __future__ import annotations

import random
from pathlib import Path

import soundfile as sf
import torch
import torch.nn.functional as F

from unisono.codec.config import MelConfig
from unisono.codec.mel import MelSpectrogram
from tests.train.conftest import check_generator_losses
from unisono.train.gan import discriminator_loss
from unisono.train.mel_discriminator import (
    MelDiscriminator,
    MelDiscriminatorConfig,
    normalise,
    paired_patches,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lj001-0001.wav"


def real_mel() -> torch.Tensor:
    audio, rate = sf.read(EXAMPLE, dtype="float32")
    assert rate == 16000
    return MelSpectrogram(MelConfig())(torch.from_numpy(audio))  # (n_mels, F)


def test_patches_are_the_same_span_of_both_mels_and_never_padding():
    frames = torch.tensor([50, 120, 80])
    index = torch.arange(130, dtype=torch.float32).expand(3, 4, 130).clone()
    pred, target = index.clone(), index + 1000
    for b, n in enumerate(frames.tolist()):  # padding past each crop's end
        pred[b, :, n:], target[b, :, n:] = -1.0, -1.0
    fake, real = paired_patches(pred, target, frames, window=64, rng=random.Random(0))
    assert fake.shape == real.shape == (3, 4, 50)  # the shortest crop bounds the span
    torch.testing.assert_close(real - fake, torch.full_like(fake, 1000.0))  # the same frames of both
    assert (fake >= 0).all()
    for seed in range(20):
        fake, _ = paired_patches(pred[1:], target[1:], frames[1:], window=64, rng=random.Random(seed))
        assert fake.shape[-1] == 64 and (fake >= 0).all() and (fake[0, 0, -1] < 120) and (fake[1, 0, -1] < 80)


def test_the_discriminator_learns_to_tell_a_real_mel_from_a_smeared_one():
    torch.manual_seed(0)
    mel = real_mel()
    # the L1 regression's symptom: the same mel averaged over 9 frames (90 ms)
    smeared = F.avg_pool1d(mel[None], 9, stride=1, padding=4, count_include_pad=False)[0]
    disc = MelDiscriminator(MelDiscriminatorConfig(channels=8))
    opt = torch.optim.AdamW(disc.parameters(), lr=1e-3, betas=(0.8, 0.99))
    rng = random.Random(0)
    frames = torch.full((8,), mel.shape[-1])

    def patches():
        fake, real = paired_patches(smeared.expand(8, -1, -1), mel.expand(8, -1, -1), frames, 64, rng)
        return normalise(fake, real)

    first = None
    for _ in range(60):
        fake, real = patches()
        loss = discriminator_loss(disc, fake, real)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    fake, real = patches()
    with torch.no_grad():
        score_real, score_fake = disc(real)[0].mean(), disc(fake)[0].mean()
        assert float(discriminator_loss(disc, fake, real)) < 0.5 * first
    assert score_real > score_fake + 0.5

    # the model's losses: the smeared mel is told to move, the real one and the discriminator are not
    check_generator_losses(disc, fake, real)
