"""Mel -> waveform, in the manner of Vocos (Siuzdak 2023, arXiv 2306.00814): a ConvNeXt backbone
at the frame rate predicts STFT magnitude and phase, and an inverse STFT makes the samples.
No upsampling layers: the iSTFT does that, which keeps it fast on a CPU.

    mel (B, n_mels, F) ─► conv k7 ─► N x ConvNeXt (causal depthwise k7, LN, MLP) ─► LN
        ─► linear ─► log|S|, arg S  (B, n_fft/2 + 1, F) ─► iSTFT ("same" padding) ─► (B, F * hop)

The depthwise convolutions are causal and the input convolution looks one frame ahead, so the
samples of frame f depend on frames f - 43 .. f + 3 (`VocoderConfig.receptive_field`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unisono.codec.config import MelConfig, VocoderConfig


class ISTFT(nn.Module):
    """Inverse STFT with "same" padding: F frames -> exactly F * hop samples (Vocos' ISTFT).
    torch.istft's centred mode cannot do this without an all-zero window envelope at the end."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:  # (B, n_fft/2 + 1, F) complex
        B, _, T = spec.shape
        pad = (self.n_fft - self.hop) // 2
        frames = torch.fft.irfft(spec, self.n_fft, dim=1) * self.window[None, :, None]  # (B, n_fft, F)
        size = (T - 1) * self.hop + self.n_fft
        fold = dict(output_size=(1, size), kernel_size=(1, self.n_fft), stride=(1, self.hop))
        y = F.fold(frames, **fold)[:, 0, 0, pad:size - pad]  # (B, F * hop)
        env = F.fold(self.window.square()[None, :, None].expand(1, -1, T), **fold)[0, 0, 0, pad:size - pad]
        return y / env.clamp(min=1e-8)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate_dim: int, kernel: int, layer_scale: float):
        super().__init__()
        self.kernel = kernel
        self.dwconv = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1, self.pw2 = nn.Linear(dim, intermediate_dim), nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, F)
        h = self.dwconv(F.pad(x, (self.kernel - 1, 0))).transpose(1, 2)  # (B, F, D), causal
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class Vocoder(nn.Module):
    def __init__(self, config: VocoderConfig, mel: MelConfig):
        super().__init__()
        self.config, self.mel_config = config, mel
        k = config.kernel
        self.embed = nn.Conv1d(mel.n_mels, config.dim, k)
        self.norm_in = nn.LayerNorm(config.dim)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(config.dim, config.intermediate_dim, k, 1.0 / config.n_layers) for _ in range(config.n_layers)
        )
        self.norm_out = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, mel.n_fft + 2)
        self.istft = ISTFT(mel.n_fft, mel.hop_length)

    @property
    def receptive_field(self) -> tuple[int, int]:
        return self.config.receptive_field(self.mel_config.n_fft, self.mel_config.hop_length)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F) log-mel -> (B, F * hop) audio."""
        k, r = self.config.kernel, self.config.embed_right
        x = self.embed(F.pad(mel, (k - 1 - r, r)))  # (B, D, F)
        x = self.norm_in(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        h = self.head(self.norm_out(x.transpose(1, 2))).transpose(1, 2)  # (B, n_fft + 2, F)
        log_mag, phase = h.chunk(2, dim=1)
        mag = torch.exp(log_mag.clamp(max=6.0))  # bounded: a wild early step cannot overflow
        return self.istft(torch.polar(mag, phase))
