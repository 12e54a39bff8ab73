"""Least-squares GAN losses with feature matching (HiFi-GAN, Kong et al. 2020): the adversarial term of
the vocoder's fine-tune (`unisono.train.wave_discriminator`).

A discriminator returns (scores, features): one score map or a list of them (one per sub-discriminator,
each averaged on its own and the averages summed, as HiFi-GAN sums its sub-discriminators' losses), and
the feature maps of its layers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _maps(scores: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return scores if isinstance(scores, list) else [scores]


def discriminator_loss(disc: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Least squares: real inputs towards 1, generated ones towards 0 (the generator's output detached)."""
    real_scores, _ = disc(real)
    fake_scores, _ = disc(fake.detach())
    return sum(((r - 1) ** 2).mean() + (f ** 2).mean() for r, f in zip(_maps(real_scores), _maps(fake_scores)))


def generator_loss(disc: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, feature matching): the generated inputs' scores towards 1, and the L1 between the
    discriminator's feature maps of each generated input and of its real one. Only `fake` gets gradients."""
    fake_scores, fake_feats = disc(fake)
    with torch.no_grad():
        _, real_feats = disc(real)
    adversarial = sum(((f - 1) ** 2).mean() for f in _maps(fake_scores))
    matching = torch.stack([F.l1_loss(f, r) for f, r in zip(fake_feats, real_feats)]).mean()
    return adversarial, matching
