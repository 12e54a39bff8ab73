"""Whisper's log-mel features, computed per clip so that length is a free variable.

    audio (16 kHz) ─► STFT (n_fft 400, hop 160, Hann, centred) ─► |.|² ─► mel (Slaney) ─► log10
                  ─► floor at (peak - 8) ─► (x + 4) / 4                       100 frames per second

The arithmetic is that of transformers' WhisperFeatureExtractor (its torch path), whose mel
filter bank is reused as is. The extractor pads every clip to 30 s; here each clip keeps its
own length (N // 160 frames) unless `pad_to_samples` asks for Whisper's window.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
WHISPER_WINDOW_SAMPLES = 30 * SAMPLE_RATE  # 480000: 3000 mel frames


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) Slaney mel filters, exactly as WhisperFeatureExtractor builds them."""
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=SAMPLE_RATE, hop_length=HOP_LENGTH, n_fft=N_FFT)
    return torch.from_numpy(np.asarray(extractor.mel_filters, dtype=np.float32))


def n_frames(n_samples: int) -> int:
    """Mel frames of a clip of `n_samples` (Whisper drops the STFT's last frame)."""
    return max(n_samples, N_FFT) // HOP_LENGTH


def log_mel(
    audio: np.ndarray | torch.Tensor,
    n_mels: int = 80,
    pad_to_samples: int | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(n_mels, frames) log-mel of a 16 kHz mono clip.

    `pad_to_samples=480000` zero-pads the waveform to Whisper's 30 s window first, which
    reproduces WhisperFeatureExtractor's output for clips of up to 30 s.
    """
    wave = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not isinstance(audio, torch.Tensor) else audio)
    wave = wave.to(device=device, dtype=torch.float32).reshape(-1)
    target = max(wave.numel(), N_FFT, pad_to_samples or 0)
    if target > wave.numel():
        wave = torch.nn.functional.pad(wave, (0, target - wave.numel()))
    window = torch.hann_window(N_FFT, device=wave.device)
    stft = torch.stft(wave, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # (n_fft/2 + 1, frames)
    mel = mel_filters(n_mels).to(wave.device).T @ power  # (n_mels, frames)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def batch_log_mel(
    clips: Sequence[np.ndarray | torch.Tensor],
    n_mels: int = 80,
    pad_to_samples: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel of clips of different lengths: (N, n_mels, T_max) zero-padded, and (N,) lengths.

    Each clip is featurised alone (its own peak sets its floor), so a clip's features do not
    depend on the batch it is in.
    """
    if len(clips) == 0:
        raise ValueError("batch_log_mel needs at least one clip")
    mels = [log_mel(c, n_mels, pad_to_samples, device) for c in clips]
    lengths = torch.tensor([m.shape[-1] for m in mels], dtype=torch.long)
    out = torch.zeros(len(mels), n_mels, int(lengths.max()), device=mels[0].device)
    for i, m in enumerate(mels):
        out[i, :, : m.shape[-1]] = m
    return out, lengths


__all__ = ["HOP_LENGTH", "N_FFT", "WHISPER_WINDOW_SAMPLES", "batch_log_mel", "log_mel", "mel_filters", "n_frames"]
