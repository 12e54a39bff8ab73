"""Adaptor: encoder frames (50 Hz, encoder width) -> decoder positions (50/stride Hz, decoder width).

A strided 1-D convolution shortens the sequence (fewer decoder positions per second of audio
is the main lever on decoding cost), then a two-layer MLP maps into the decoder's embedding
space. Only this module is trained in the alignment stage.
"""

from __future__ import annotations

import torch
from torch import nn

from unisono.model.config import AdaptorConfig


def adaptor_length(encoder_frames: torch.Tensor | int, stride: int) -> torch.Tensor | int:
    """Output positions for `encoder_frames` input frames: ceil(frames / stride)."""
    return -(-encoder_frames // stride)


class Adaptor(nn.Module):
    def __init__(self, config: AdaptorConfig, encoder_dim: int, decoder_dim: int):
        super().__init__()
        self.config = config
        # padding (k-1)//2 with k odd gives ceil(T / stride) outputs
        self.conv = nn.Conv1d(
            encoder_dim, encoder_dim, config.kernel_size, stride=config.stride, padding=(config.kernel_size - 1) // 2
        )
        self.mlp = nn.Sequential(
            nn.Linear(encoder_dim, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, decoder_dim),
        )
        if config.kernel_size % 2 == 0:
            raise ValueError(f"adaptor kernel_size must be odd to keep lengths exact, got {config.kernel_size}")

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, D_enc), lengths (B,) -> (B, T', D_dec), lengths' (B,)."""
        B, T, _ = frames.shape
        # zero the padding so that a batched item sees the same conv input as when alone
        valid = torch.arange(T, device=frames.device)[None, :] < lengths[:, None]  # (B, T)
        x = (frames * valid[..., None]).transpose(1, 2)  # (B, D_enc, T)
        x = nn.functional.gelu(self.conv(x)).transpose(1, 2)  # (B, T', D_enc)
        return self.mlp(x), adaptor_length(lengths, self.config.stride)
