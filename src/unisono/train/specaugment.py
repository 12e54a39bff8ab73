"""SpecAugment-style masking (Park et al. 2019, arXiv 1904.08779): time masks and frequency masks.

Applied per clip to a (channels, frames) feature map: the log-mel (channels = mel bins) or a
cached frozen-encoder output transposed to (channels, frames). Masked values are set to the
clip's mean, so that a mask adds no new extreme value to the input. Time-warping is left out
(the paper found it the least useful and it is the costliest).
"""

from __future__ import annotations

import torch

from unisono.train.config import SpecAugmentConfig


def spec_augment(
    features: torch.Tensor,  # (C, T) one clip
    config: SpecAugmentConfig,
    generator: torch.Generator,
    length: int | None = None,  # real frames (the rest is padding, left alone)
    channel_scale: float = 1.0,  # freq_width is in mel bins; encoder channels scale it
) -> torch.Tensor:
    """A masked copy of `features`; the input is not modified."""
    C, T = features.shape
    T = min(T, length) if length is not None else T
    out = features.clone()
    if T == 0 or torch.rand((), generator=generator).item() >= config.prob:
        return out
    fill = features[:, :T].mean()
    max_f = max(1, int(round(config.freq_width * channel_scale)))
    for _ in range(config.freq_masks):
        width = int(torch.randint(0, min(max_f, C) + 1, (), generator=generator))
        start = int(torch.randint(0, C - width + 1, (), generator=generator))
        out[start : start + width, :T] = fill
    max_t = int(config.time_width * T)
    for _ in range(config.time_masks):
        width = int(torch.randint(0, max_t + 1, (), generator=generator))
        start = int(torch.randint(0, T - width + 1, (), generator=generator))
        out[:, start : start + width] = fill
    return out
