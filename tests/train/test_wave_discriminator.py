"""The waveform discriminators of the vocoder's adversarial term: every sub-discriminator scores any
length, they learn to tell real speech from a vocoder's typical fault, and the losses reach only what
they should."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import torch

from tests.train.conftest import check_generator_losses
from unisono.train.gan import discriminator_loss
from unisono.train.wave_discriminator import WaveDiscriminator, WaveDiscriminatorConfig, normalise

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lj001-0001.wav"
SMALL = WaveDiscriminatorConfig(periods=(2, 3), period_channels=(8, 16), resolutions=((256, 64), (512, 128)),
                                resolution_channels=8)


def real_speech() -> torch.Tensor:
    audio, rate = sf.read(EXAMPLE, dtype="float32")
    assert rate == 16000
    return torch.from_numpy(audio)


def random_phase(wave: torch.Tensor) -> torch.Tensor:
    """The same STFT magnitudes with random phases: what a vocoder trained on magnitudes alone is free to make."""
    window = torch.hann_window(512)
    spec = torch.stft(wave, 512, 128, window=window, return_complex=True)
    phase = torch.rand(spec.shape, generator=torch.Generator().manual_seed(0)) * 2 * torch.pi
    return torch.istft(torch.polar(spec.abs(), phase), 512, 128, window=window, length=wave.shape[-1])


def test_every_sub_discriminator_scores_any_length():
    disc = WaveDiscriminator(WaveDiscriminatorConfig())
    for n in (12800, 12801, 3 * 7 * 11 * 50 + 1):
        scores, features = disc(torch.randn(2, n))
        assert len(scores) == len(WaveDiscriminatorConfig().periods) + len(WaveDiscriminatorConfig().resolutions)
        assert all(s.shape[0] == 2 and s.numel() > 2 for s in scores)
        assert len(features) == 5 * 5 + 5 * 1


def test_the_discriminators_learn_to_tell_real_speech_from_random_phases():
    torch.manual_seed(0)
    speech = real_speech()
    fake_speech = random_phase(speech)
    disc = WaveDiscriminator(SMALL)
    opt = torch.optim.AdamW(disc.parameters(), lr=1e-3, betas=(0.8, 0.99))
    gen = torch.Generator().manual_seed(1)

    def crops(n: int = 4, width: int = 6400) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, speech.shape[-1] - width, (n,), generator=gen).tolist()
        return normalise(*(torch.stack([w[s: s + width] for s in starts]) for w in (fake_speech, speech)))

    for _ in range(80):
        fake, real = crops()
        loss = discriminator_loss(disc, fake, real)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fake, real = crops()
    with torch.no_grad():
        real_scores, fake_scores = disc(real)[0], disc(fake)[0]
        # below the loss of a discriminator that cannot tell them apart (0.5 for each sub-discriminator,
        # scoring everything 0.5), where an untrained one starts higher
        assert float(discriminator_loss(disc, fake, real)) < 0.95 * 0.5 * len(real_scores)
    # each sub-discriminator on its own scores the real crops higher
    assert all(r.mean() > f.mean() + 0.03 for r, f in zip(real_scores, fake_scores))

    # the vocoder's losses: the generated audio is told to move, the real audio and the discriminator are not
    check_generator_losses(disc, fake, real)
