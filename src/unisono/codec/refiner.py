"""Mel refiner: conditional flow matching from the token-to-mel estimate to a sharp mel.

The token-to-mel model is trained with an L1 loss, so it predicts the median mel the tokens
allow: formants smeared, harmonics averaged away. The refiner samples a mel instead. It is a
flow (Lipman et al. 2023, as in Matcha-TTS and CosyVoice) whose prior is centred on that
estimate, mu, as in Grad-TTS:

    x0 = mu + prior_std * noise          x1 = the real mel
    x_t = (1 - t) x0 + t x1              the network learns v(x_t, t | mu, voice) = x1 - x0
    inference: Euler steps of dx/dt = v from t = 0 to 1, starting from the noise scaled by a
    temperature (< 1 samples closer to the mode, as in Grad-TTS)

    mu, x_t (B, 2 n_mels, F) ─► 1x1 conv (+ voice) ─► N x [+ time, causal dilated depthwise conv,
        LayerNorm, FFN] ─► LayerNorm ─► linear ─► v (B, n_mels, F)

Streaming: every convolution is causal, so frame f of the output depends on frames
f - steps * reach .. f of mu (`RefinerConfig.receptive_frames`) and on the noise there. The noise
is a fixed function of the absolute frame index (`position_noise`), so a window recomputed
while streaming draws the same noise as the whole clip: streamed audio equals offline audio,
and the same tokens always give the same audio.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unisono.codec.config import RefinerConfig

NOISE_PERIOD = 8192  # frames (82 s) before the positional noise repeats


def noise_table(n_mels: int, seed: int) -> torch.Tensor:
    """(n_mels, NOISE_PERIOD) standard normal noise drawn from a fixed seed."""
    return torch.randn(n_mels, NOISE_PERIOD, generator=torch.Generator().manual_seed(seed))


def position_noise(table: torch.Tensor, start: int, frames: int) -> torch.Tensor:
    """(n_mels, frames) noise of frames [start, start + frames): a function of the absolute frame
    index only."""
    idx = (start + torch.arange(frames, device=table.device)) % table.shape[1]
    return table[:, idx]


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) in [0, 1] -> (B, dim) sinusoids."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class RefinerBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int, ffn_mult: int):
        super().__init__()
        self.pad = (kernel - 1) * dilation  # all on the left: causal
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, ffn_mult * channels), nn.GELU(), nn.Linear(ffn_mult * channels, channels))

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """h (B, C, F), temb (B, C)."""
        x = self.conv(F.pad(h + temb[..., None], (self.pad, 0)))
        return h + self.ffn(self.norm(x.transpose(1, 2))).transpose(1, 2)


class MelRefiner(nn.Module):
    def __init__(self, config: RefinerConfig, n_mels: int, speaker_dim: int):
        super().__init__()
        self.config, self.n_mels = config, n_mels
        c = config.channels
        self.inp = nn.Conv1d(2 * n_mels, c, 1)
        self.speaker_in = nn.Linear(speaker_dim, c)
        self.time = nn.Sequential(nn.Linear(config.time_dim, c), nn.GELU(), nn.Linear(c, c))
        self.blocks = nn.ModuleList(RefinerBlock(c, config.kernel, d, config.ffn_mult) for d in config.dilations)
        self.norm = nn.LayerNorm(c)
        self.out = nn.Linear(c, n_mels)
        self.register_buffer("noise", noise_table(n_mels, config.seed), persistent=False)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, mu: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """x, mu (B, n_mels, F); t (B,); speaker (B, S) -> v (B, n_mels, F)."""
        h = self.inp(torch.cat([x, mu], dim=1)) + self.speaker_in(speaker)[..., None]
        temb = self.time(time_embedding(t, self.config.time_dim))
        for block in self.blocks:
            h = block(h, temb)
        return self.out(self.norm(h.transpose(1, 2))).transpose(1, 2)

    def loss(self, mu: torch.Tensor, target: torch.Tensor, speaker: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Flow-matching loss: mean squared velocity error over real frames; mask (B, 1, F)."""
        B = mu.shape[0]
        t = torch.rand(B, device=mu.device)
        x0 = mu + self.config.prior_std * torch.randn_like(mu)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * target
        v = self.velocity(xt, t, mu, speaker)
        err = ((v - (target - x0)) ** 2) * mask
        return err.sum() / (mask.sum() * self.n_mels)

    @torch.no_grad()
    def forward(self, mu: torch.Tensor, speaker: torch.Tensor, start_frame: int = 0) -> torch.Tensor:
        """Sample a mel (B, n_mels, F) from the estimate mu with `config.steps` Euler steps; the
        noise of frame f is `position_noise` at start_frame + f."""
        c = self.config
        B, _, Fr = mu.shape
        x = mu + c.prior_std * c.temperature * position_noise(self.noise, start_frame, Fr)[None]
        dt = 1.0 / c.steps
        for i in range(c.steps):
            t = torch.full((B,), i * dt, device=mu.device)
            x = x + dt * self.velocity(x, t, mu, speaker)
        return x
