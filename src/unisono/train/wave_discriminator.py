"""Discriminators of waveforms: the adversarial term of the vocoder's training, as Vocos and HiFi-GAN train theirs.

A vocoder trained on mel and STFT-magnitude losses alone is free in its phase and in how it builds a
voice's periodicity from the magnitudes, and it buzzes: copy synthesis of clean synthetic speech (the
real mel voiced by the vocoder) cost the recogniser 5.6 points of WER on a held-out synthetic set,
more than the whole budget of the resynthesis bar.
Two families look at what those losses do not:

    multi-period    (HiFi-GAN, Kong et al. 2020)  the samples folded into rows of p (p = 2, 3, 5, 7, 11):
                    2-d convolutions along the rows see the voice's periodic structure
    multi-resolution (UnivNet, Jang et al. 2021; Vocos)  log-magnitude spectrograms at three STFT sizes:
                    2-d convolutions over (frame, bin)

Channels are a fraction of the published ones: the vocoder is small and trains on a CPU. Least-squares
losses with feature matching (`unisono.train.gan`). Nothing of it is exported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm


@dataclass
class WaveDiscriminatorConfig:
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: tuple[int, ...] = (16, 32, 64, 128)  # HiFi-GAN: 32, 128, 512, 1024
    # (n_fft, hop) at 16 kHz. Vocos and UnivNet use three sizes; on a CPU each costs twice all five periods,
    # and the mel and multi-resolution STFT losses already hold the magnitudes at three sizes
    resolutions: tuple[tuple[int, int], ...] = ((512, 128),)
    resolution_channels: int = 16  # Vocos / UnivNet: 32
    window: int = 12800  # samples of a crop (0.8 s): the vocoder-gta job's longer crops are cut to it
    crops: int = 8  # of a batch's segments, the first this many are judged
    lr: float = 2e-4


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: tuple[int, ...]):
        super().__init__()
        self.period = period
        convs, c_in = [], 1
        for c_out in channels:
            convs.append(weight_norm(nn.Conv2d(c_in, c_out, (5, 1), stride=(3, 1), padding=(2, 0))))
            c_in = c_out
        convs.append(weight_norm(nn.Conv2d(c_in, c_in, (5, 1), padding=(2, 0))))
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv2d(c_in, 1, (3, 1), padding=(1, 0)))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # (B, N)
        n = wave.shape[-1]
        x = F.pad(wave, (0, -n % self.period), mode="reflect")
        x = x.view(x.shape[0], 1, -1, self.period)  # (B, 1, N / p, p)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        return self.out(x), features


class ResolutionDiscriminator(nn.Module):
    def __init__(self, n_fft: int, hop: int, channels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        # (frame, bin): strides along the bins, which outnumber the frames of a crop (from the first layer on:
        # UnivNet's first is unstrided, and costs as much as the rest together)
        convs = [weight_norm(nn.Conv2d(1, channels, (3, 9), stride=(1, 2), padding=(1, 4)))]
        convs += [weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))) for _ in range(3)]
        convs += [weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)))]
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # (B, N)
        spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, return_complex=True).abs()
        x = torch.log(spec.clamp(min=1e-5)).transpose(1, 2)[:, None]  # (B, 1, frames, bins)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        return self.out(x), features


def normalise(fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both scaled by the real crops' spread. Clips are as loud as they were recorded (speech at a spread
    of 0.01-0.1), and on inputs that small the period discriminators barely learn; the losses of the
    vocoder already hold its loudness."""
    scale = real.std().detach().clamp(min=1e-4)
    return fake / scale, real / scale


class WaveDiscriminator(nn.Module):
    """(B, N) audio -> one map of real/fake scores per sub-discriminator, and all their feature maps."""

    def __init__(self, cfg: WaveDiscriminatorConfig):
        super().__init__()
        self.subs = nn.ModuleList(
            [PeriodDiscriminator(p, cfg.period_channels) for p in cfg.periods]
            + [ResolutionDiscriminator(n_fft, hop, cfg.resolution_channels) for n_fft, hop in cfg.resolutions]
        )

    def forward(self, wave: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        scores, features = [], []
        for sub in self.subs:
            s, f = sub(wave)
            scores.append(s)
            features += f
        return scores, features
