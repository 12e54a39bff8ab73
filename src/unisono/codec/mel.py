"""The codec's mel spectrogram: natural log of the mel-weighted STFT magnitude.

    audio (16 kHz) ─► STFT (n_fft 640, hop 160, Hann, centred, reflect) ─► |.| ─► mel (Slaney)
                  ─► log(max(., 1e-5))                         100 frames per second

A clip of N samples gives N // hop + 1 frames; `mel_for_tokens` cuts (or pads) that to the
4 frames per token the detokenizer predicts. Unlike Whisper's log-mel there is no per-clip
floor or rescaling: the vocoder must hear absolute loudness.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from unisono.codec.config import MelConfig


@lru_cache(maxsize=4)
def _filters(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
        max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney",
    )
    return torch.from_numpy(np.asarray(bank, dtype=np.float32))  # (n_fft/2 + 1, n_mels)


class MelSpectrogram(nn.Module):
    def __init__(self, config: MelConfig):
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.register_buffer("filters", _filters(config.sample_rate, config.n_fft, config.n_mels).T.contiguous(), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, N) or (N,) float audio -> (B, n_mels, N // hop + 1) or (n_mels, frames) log-mel."""
        c = self.config
        squeeze = audio.dim() == 1
        wave = audio[None] if squeeze else audio
        wave = wave.float()
        if wave.shape[-1] <= c.n_fft // 2:  # reflect padding needs more samples than the half window
            wave = torch.nn.functional.pad(wave, (0, c.n_fft // 2 + 1 - wave.shape[-1]))
        spec = torch.stft(wave, c.n_fft, c.hop_length, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True).abs()  # (B, n_fft/2 + 1, frames)
        mel = torch.log(torch.clamp(self.filters @ spec, min=c.log_floor))  # (B, n_mels, frames)
        return mel[0] if squeeze else mel


@lru_cache(maxsize=4)
def _dct_basis(n: int) -> torch.Tensor:
    """(n, n) orthonormal DCT-II: column k is the k-th cosine over n mel bins."""
    k = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(np.pi / n * (k[:, None] + 0.5) * k[None, :]) * np.sqrt(2.0 / n)
    basis[:, 0] /= np.sqrt(2.0)
    return basis.float()


def spectral_envelope(mel: torch.Tensor, n_cepstra: int) -> torch.Tensor:
    """(..., n_mels, F) log-mel -> the same shape, kept to its first `n_cepstra` cepstra (DCT along
    frequency): the smooth spectral envelope of each frame, without the voice's harmonics."""
    basis = _dct_basis(mel.shape[-2])[:, :n_cepstra].to(mel.device, mel.dtype)
    return basis @ (basis.T @ mel)


def mel_for_tokens(mel: torch.Tensor, n_tokens: int, upsample: int, log_floor: float) -> torch.Tensor:
    """(..., n_mels, F) -> (..., n_mels, upsample * n_tokens): cut, or pad with silence."""
    frames = upsample * n_tokens
    if mel.shape[-1] >= frames:
        return mel[..., :frames]
    pad = torch.full((*mel.shape[:-1], frames - mel.shape[-1]), float(np.log(log_floor)), dtype=mel.dtype, device=mel.device)
    return torch.cat([mel, pad], dim=-1)
