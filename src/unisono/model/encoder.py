"""The audio encoder: transformers' Whisper encoder, run so that length is a free variable.

    log-mel (B, n_mels, T) at 100 Hz
      └─ conv1 (k3) ─ GELU ─ conv2 (k3, stride 2) ─ GELU      (B, T', D), T' = ceil(T / 2), 50 Hz
           └─ + positional embeddings [0 : T']
                └─ N pre-norm Transformer layers (key-padding mask) ─ LayerNorm

transformers' `WhisperEncoder.forward` insists on 3000 mel frames (a 30 s window), so a 4 s
clip costs the work of 30 s. `AudioEncoder` reuses the same modules (conv1, conv2,
embed_positions, layers, layer_norm: weights load unchanged) but runs them itself:

- `variable_length=True` encodes only the frames given, with the positional embeddings sliced
  to that length (whisper.cpp's `audio_ctx`; CTranslate2's encoder does the same). The outputs
  differ from the padded regime (attention sees no silence), so a model must be trained in the
  regime it runs in.
- `variable_length=False` pads every item to 3000 frames as Whisper was trained.
- Items of different lengths in one batch are masked (zeroed before each convolution, masked
  as attention keys), so each item's output equals encoding it alone.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from unisono.model.config import EncoderConfig

if TYPE_CHECKING:
    import transformers

# transformers' WhisperForConditionalGeneration prefix of the encoder's weights.
_HF_ENCODER_PREFIX = "model.encoder."


def whisper_config_from_encoder(config: EncoderConfig) -> "transformers.WhisperConfig":
    """The transformers WhisperConfig that builds an encoder of this geometry."""
    from transformers import WhisperConfig

    whisper_config = WhisperConfig(
        num_mel_bins=config.n_mels,
        d_model=config.d_model,
        encoder_layers=config.n_layers,
        encoder_attention_heads=config.n_heads,
        encoder_ffn_dim=config.ffn_dim,
        max_source_positions=config.max_source_positions,
        # The decoder is never built here; keep its geometry minimal.
        decoder_layers=1,
        decoder_attention_heads=config.n_heads,
        decoder_ffn_dim=config.ffn_dim,
    )
    whisper_config._attn_implementation = "sdpa"
    return whisper_config


def encoder_config_from_whisper(whisper_config: "transformers.WhisperConfig", **overrides: Any) -> EncoderConfig:
    """The EncoderConfig matching a transformers WhisperConfig (e.g. of a loaded checkpoint)."""
    return EncoderConfig(
        n_mels=whisper_config.num_mel_bins,
        d_model=whisper_config.d_model,
        n_layers=whisper_config.encoder_layers,
        n_heads=whisper_config.encoder_attention_heads,
        ffn_dim=whisper_config.encoder_ffn_dim,
        max_source_positions=whisper_config.max_source_positions,
        **overrides,
    )


def output_lengths(mel_lengths: torch.Tensor) -> torch.Tensor:
    """Encoder frames (50 Hz) produced from mel frames (100 Hz): ceil(T / 2), as conv2 does."""
    return (mel_lengths + 1) // 2


class AudioEncoder(nn.Module):
    """Whisper encoder over variable-length, batched log-mel features; frozen by default.

    >>> enc = AudioEncoder.from_source("bundled:whisper-tiny.en")
    >>> mel, lengths = batch_log_mel([audio_a, audio_b])          # (B, 80, T), (B,)
    >>> frames, frame_lengths = enc(mel, lengths)                  # (B, ceil(T/2), 384), (B,)
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        self.config = config
        # Holds conv1, conv2, embed_positions, layers, layer_norm; its forward is not used.
        self.whisper = WhisperEncoder(whisper_config_from_encoder(config))
        if config.frozen:
            self.freeze()

    # -- construction and weights ---------------------------------------------------------

    @classmethod
    def from_source(cls, source: str | os.PathLike, config: EncoderConfig | None = None) -> "AudioEncoder":
        """An encoder with pretrained weights from "bundled:whisper-tiny.en", a local Hugging Face
        Whisper directory, or a local CTranslate2 (faster-whisper) directory.

        Without `config` the geometry comes from the source; with one, it must match it
        (`variable_length` and `frozen` are taken from `config`).
        """
        from unisono.model.whisper_source import load_whisper_source

        whisper_config, state = load_whisper_source(source)
        found = encoder_config_from_whisper(whisper_config, source=str(source))
        if config is None:
            config = found
        else:
            _check_geometry(config, found, source)
            config = EncoderConfig(**{**config.__dict__, "source": str(source)})
        encoder = cls(config)
        encoder.load_encoder_state_dict(_strip_prefix(state, _HF_ENCODER_PREFIX))
        return encoder

    def load_source_weights(self, source: str | os.PathLike) -> None:
        """Load pretrained weights into this instance (its geometry must match the source's)."""
        from unisono.model.whisper_source import load_whisper_source

        whisper_config, state = load_whisper_source(source)
        _check_geometry(self.config, encoder_config_from_whisper(whisper_config), source)
        self.load_encoder_state_dict(_strip_prefix(state, _HF_ENCODER_PREFIX))
        self.config.source = str(source)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights named as transformers' WhisperEncoder names them ("conv1.weight", "layers.0...")."""
        return {k: v.detach().clone() for k, v in self.whisper.state_dict().items()}

    def load_encoder_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Inverse of `encoder_state_dict`; every weight must be present, shapes must match."""
        missing, unexpected = self.whisper.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"encoder weights do not match the encoder: missing {missing[:5]}, unexpected {unexpected[:5]} "
                f"({len(missing)} missing, {len(unexpected)} unexpected)"
            )

    # -- frozen behaviour ------------------------------------------------------------------

    def freeze(self) -> None:
        """No gradients, eval mode for good (see `train`)."""
        self.config.frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "AudioEncoder":
        # A frozen encoder stays in eval mode when the model around it trains (no dropout).
        return super().train(mode and not self.config.frozen)

    # -- forward ---------------------------------------------------------------------------

    @property
    def max_mel_frames(self) -> int:
        return 2 * self.config.max_source_positions  # 3000 for Whisper: 30 s at 100 Hz

    def forward(
        self,
        mel: torch.Tensor,  # (B, n_mels, T)
        mel_lengths: torch.Tensor | None = None,  # (B,) real mel frames per item; None: all T
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode log-mel features; returns frames (B, T', D) at 50 Hz and their lengths (B,).

        Variable-length mode: T' = ceil(T / 2), frames past an item's length are zeros.
        Padded mode: every item is padded to 3000 mel frames (T' = 1500); the lengths still
        count the frames that hold the real audio, the rest encode the padding.
        """
        if self.config.frozen:
            with torch.no_grad():
                return self._encode(mel, mel_lengths)
        return self._encode(mel, mel_lengths)

    def _encode(self, mel: torch.Tensor, mel_lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.whisper
        if mel.dim() != 3 or mel.shape[1] != self.config.n_mels:
            raise ValueError(
                f"expected log-mel of shape (batch, {self.config.n_mels}, frames), got {tuple(mel.shape)}; "
                f"compute it with unisono.audio.features.log_mel(audio, n_mels={self.config.n_mels})"
            )
        B, _, T = mel.shape
        if mel_lengths is None:
            mel_lengths = torch.full((B,), T, dtype=torch.long, device=mel.device)
        mel_lengths = mel_lengths.to(device=mel.device, dtype=torch.long)
        if T > self.max_mel_frames or int(mel_lengths.max()) > T or int(mel_lengths.min()) < 1:
            raise ValueError(
                f"mel input of {T} frames with lengths {mel_lengths.tolist()}: the encoder takes 1 to "
                f"{self.max_mel_frames} frames ({self.max_mel_frames / 100:.0f} s) per item; split longer "
                "audio first (unisono.audio.vad.speech_segments)"
            )
        mel = mel.to(dtype=w.conv1.weight.dtype)

        if not self.config.variable_length:
            mel = _pad_to_window(mel, mel_lengths, self.max_mel_frames)  # (B, n_mels, 3000)
            conv_lengths = torch.full_like(mel_lengths, self.max_mel_frames)
        else:
            conv_lengths = mel_lengths
        T = mel.shape[-1]

        # Zero what lies past each item's end before each convolution: the convolutions of an
        # item encoded alone see zero padding there, so a batch must too.
        mel_mask = _length_mask(conv_lengths, T)  # (B, T)
        x = F.gelu(w.conv1(mel * mel_mask[:, None, :]))  # (B, D, T)
        x = F.gelu(w.conv2(x * mel_mask[:, None, :]))  # (B, D, T'), T' = ceil(T / 2)
        x = x.transpose(1, 2)  # (B, T', D)
        T_out = x.shape[1]
        x = x + w.embed_positions.weight[:T_out]  # positions sliced to the real length

        frame_lengths = output_lengths(conv_lengths)  # (B,)
        frame_mask = _length_mask(frame_lengths, T_out)  # (B, T')
        attention_mask = None
        if bool((frame_lengths < T_out).any()):
            # Additive key-padding mask (B, 1, 1, T'): padded keys get -inf-like scores.
            attention_mask = torch.zeros(B, 1, 1, T_out, dtype=x.dtype, device=x.device)
            attention_mask.masked_fill_(~frame_mask[:, None, None, :], torch.finfo(x.dtype).min)
        for layer in w.layers:
            x = layer(x, attention_mask)
        x = w.layer_norm(x)  # (B, T', D)
        x = x * frame_mask[..., None].to(x.dtype)
        return x, output_lengths(mel_lengths)


def _length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) lengths -> (B, size) bool, True on real positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def _pad_to_window(mel: torch.Tensor, mel_lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """Pad each item to `frames` with the value a zero-padded signal gives in Whisper's log-mel.

    Whisper's log-mel is (max(log10 S, m - 8) + 4) / 4 with m the item's peak log10 power;
    silence (log10 1e-10 = -10) therefore maps to max(peak - 2, -1.5) in normalised units,
    where peak = (m + 4) / 4 is the largest value of the item. Features already padded by the
    extractor (log_mel(..., pad_to_samples=480000)) pass through unchanged.
    """
    B, n_mels, T = mel.shape
    real = _length_mask(mel_lengths, T)[:, None, :]  # (B, 1, T)
    peak = mel.masked_fill(~real, float("-inf")).amax(dim=(1, 2))  # (B,)
    silence = torch.clamp(peak - 2.0, min=-1.5)  # (B,)
    out = silence[:, None, None].expand(B, n_mels, frames).clone()  # (B, n_mels, frames)
    out[:, :, :T] = torch.where(real, mel, silence[:, None, None])
    return out


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _check_geometry(expected: EncoderConfig, found: EncoderConfig, source: Any) -> None:
    fields = ("n_mels", "d_model", "n_layers", "n_heads", "ffn_dim", "max_source_positions")
    diffs = {f: (getattr(expected, f), getattr(found, f)) for f in fields if getattr(expected, f) != getattr(found, f)}
    if diffs:
        detail = ", ".join(f"{f}: config {a} vs source {b}" for f, (a, b) in diffs.items())
        raise ValueError(f"encoder source {source!r} does not fit the encoder config ({detail}); "
                         "build the config from the source (AudioEncoder.from_source(source)) or fix it")


__all__ = ["AudioEncoder", "encoder_config_from_whisper", "output_lengths", "whisper_config_from_encoder"]
