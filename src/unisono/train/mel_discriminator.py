"""A discriminator of log-mel patches: the adversarial term of the token-to-mel training.

An L1-regressed mel is the median of the trajectories a token sequence is spoken with, so the
formants smear within a token, where the words are (bench/codec_mel_oracle.py). A discriminator
that tells real patches from predicted ones, with the feature-matching term that steadies it
(least-squares GAN losses, as HiFi-GAN, Kong et al. 2020; a mel discriminator as GANSpeech, Yang et
al. 2021), asks the token-to-mel model for a trajectory that could have been spoken instead of
their average. Its losses are `unisono.train.gan`'s. It only trains: nothing of it is exported.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm


@dataclass
class MelDiscriminatorConfig:
    channels: int = 32  # of the first convolution; doubled at each stride, up to 4x
    n_layers: int = 4  # 2-d convolutions over (mel bin, frame), all but the first of stride 2
    kernel: int = 5
    window: int = 64  # mel frames of a patch (0.64 s: 16 tokens)
    lr: float = 2e-4


class MelDiscriminator(nn.Module):
    """(B, n_mels, F) log-mel -> a map of real/fake scores and the feature maps before it."""

    def __init__(self, cfg: MelDiscriminatorConfig):
        super().__init__()
        pad, convs, c_in = cfg.kernel // 2, [], 1
        for i in range(cfg.n_layers):
            c_out = cfg.channels * min(2 ** i, 4)
            convs.append(weight_norm(nn.Conv2d(c_in, c_out, cfg.kernel, stride=1 if i == 0 else 2, padding=pad)))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv2d(c_in, 1, 3, padding=1))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, features = mel[:, None], []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        return self.out(x), features


def paired_patches(pred: torch.Tensor, target: torch.Tensor, frames: torch.Tensor, window: int,
                   rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """The same span of each predicted and real mel (B, n_mels, F), inside its first `frames[b]` frames:
    padding never reaches the discriminator, and feature matching compares like with like. The span is
    `window` frames, or the shortest crop's length."""
    w = min(window, int(frames.min()))
    starts = [rng.randint(0, int(n) - w) for n in frames.tolist()]
    take = lambda m: torch.stack([m[b, :, s: s + w] for b, s in enumerate(starts)])  # noqa: E731
    return take(pred), take(target)


def normalise(fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both scaled by the real patches' mean and spread (log-mels sit near the log floor, far from 0)."""
    mean, std = real.mean().detach(), real.std().detach().clamp(min=1e-3)
    return (fake - mean) / std, (real - mean) / std
