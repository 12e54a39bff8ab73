"""Tokens + a voice -> mel: a small non-autoregressive model with a bounded receptive field.

    tokens (B, T) ─► embedding ─┬─ + speaker ─► conv k3 ─► N x [local attention, causal
                                │                          depthwise conv, FFN] (B, T, D)
    reference mel ─► SpeakerEncoder ─► (B, S) ─────────┐
                                                        ▼
      linear, repeat x4 (B, 4T, P) + speaker ─► post-net (asymmetric convs) ─► linear ─► mel (B, n_mels, 4T)

Each position attends to `attn_left` tokens before it and `attn_right` after it, and the
convolutions are short, so an output frame depends on a fixed window of tokens
(`Token2MelConfig.receptive_field`). There are no absolute positions: the output on a window
that covers the receptive field equals the output on the whole sequence, which is what makes
streaming exact (`unisono.codec.streaming`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unisono.codec.config import SpeakerEncoderConfig, Token2MelConfig


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) -> (B, size) bool, True on real positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class SpeakerEncoder(nn.Module):
    """Reference mel (B, n_mels, F) -> voice embedding (B, dim): convolutions, then the mean and
    standard deviation over time (which carry timbre, not words)."""

    def __init__(self, config: SpeakerEncoderConfig, n_mels: int):
        super().__init__()
        self.config = config
        self.convs = nn.ModuleList(
            nn.Conv1d(n_mels if i == 0 else config.channels, config.channels, 5, padding=2) for i in range(config.n_layers)
        )
        self.proj = nn.Linear(2 * config.channels, config.dim)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        B, _, Fr = mel.shape
        if lengths is None:
            lengths = torch.full((B,), Fr, device=mel.device)
        mask = length_mask(lengths, Fr)[:, None, :].float()  # (B, 1, F)
        h = mel
        for conv in self.convs:
            h = F.gelu(conv(h * mask))  # zero past each item's end before every convolution
        h = h * mask  # (B, C, F)
        n = mask.sum(-1).clamp(min=1.0)  # (B, 1)
        mean = h.sum(-1) / n  # (B, C)
        std = ((((h - mean[..., None]) * mask) ** 2).sum(-1) / n).clamp(min=1e-6).sqrt()
        return self.proj(torch.cat([mean, std], dim=-1))  # (B, dim)


class LocalAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class Block(nn.Module):
    def __init__(self, config: Token2MelConfig):
        super().__init__()
        d = config.dim
        self.norm1, self.attn = nn.LayerNorm(d), LocalAttention(d, config.n_heads, config.dropout)
        # causal depthwise conv: positional order without adding look-ahead
        self.norm2, self.conv = nn.LayerNorm(d), nn.Conv1d(d, d, 3, groups=d)
        self.norm3 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, config.ffn_dim), nn.GELU(), nn.Linear(config.ffn_dim, d))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), allowed))
        h = (self.norm2(x) * mask).transpose(1, 2)  # (B, D, T), zero past each item's end
        x = x + self.drop(self.conv(F.pad(h, (2, 0))).transpose(1, 2))
        return x + self.drop(self.ffn(self.norm3(x)))


class Token2Mel(nn.Module):
    def __init__(self, config: Token2MelConfig, codebook_size: int, n_mels: int, speaker_dim: int):
        super().__init__()
        self.config = config
        d = config.dim
        self.embed = nn.Embedding(codebook_size, d)
        self.speaker_in = nn.Linear(speaker_dim, d)
        self.conv_in = nn.Conv1d(d, d, 3, padding=1)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(d)
        p = config.post_dim
        self.to_post = nn.Linear(d, p)
        self.speaker_post = nn.Linear(speaker_dim, p)
        self.post = nn.ModuleList(nn.Conv1d(p, p, config.post_kernel) for _ in range(config.post_layers))
        self.out = nn.Linear(p, n_mels)

    def local_mask(self, T: int, lengths: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, T) bool: key j is visible from query i when -left <= j - i <= right and j is
        real (a padded query sees itself, so no row is empty)."""
        c = self.config
        idx = torch.arange(T, device=lengths.device)
        rel = idx[None, :] - idx[:, None]  # (T, T): j - i
        local = (rel >= -c.attn_left) & (rel <= c.attn_right)
        keys = length_mask(lengths, T)[:, None, None, :]  # (B, 1, 1, T)
        return (local[None, None] & keys) | torch.eye(T, dtype=torch.bool, device=lengths.device)

    def forward(
        self,
        tokens: torch.Tensor,  # (B, T) long
        speaker: torch.Tensor,  # (B, S)
        lengths: torch.Tensor | None = None,  # (B,) tokens per item
    ) -> torch.Tensor:
        """mel (B, n_mels, upsample * T); frames past an item's end are undefined."""
        B, T = tokens.shape
        if lengths is None:
            lengths = torch.full((B,), T, device=tokens.device)
        mask = length_mask(lengths, T)[..., None].float()  # (B, T, 1)
        x = (self.embed(tokens) + self.speaker_in(speaker)[:, None, :]) * mask  # (B, T, D)
        x = self.conv_in(x.transpose(1, 2)).transpose(1, 2)
        allowed = self.local_mask(T, lengths)
        for block in self.blocks:
            x = block(x, allowed, mask)
        up = self.config.upsample
        x = (self.to_post(self.norm(x)) * mask).repeat_interleave(up, dim=1)  # (B, up*T, P)
        x = x + self.speaker_post(speaker)[:, None, :]  # (B, up*T, P)
        fmask = mask.repeat_interleave(up, dim=1).transpose(1, 2)  # (B, 1, up*T)
        h = x.transpose(1, 2)  # (B, P, up*T)
        k = self.config.post_kernel
        for conv in self.post:
            h = h + F.gelu(conv(F.pad(h * fmask, (k - 2, 1))))  # mostly the past, one frame ahead
        return self.out(h.transpose(1, 2)).transpose(1, 2)  # (B, n_mels, up*T)

