"""Configs of the speech codec: tokenizer, token-to-mel model, speaker encoder, vocoder.

Time bases, all exact multiples of each other at 16 kHz:

    samples        16000 Hz
    mel frames       100 Hz   (hop 160)            MelConfig
    encoder frames    50 Hz   (Whisper's conv2)    the frozen audio encoder
    speech tokens     25 Hz   (2 encoder frames)   TokenizerConfig.pool = 2

so one token is 4 mel frames and 640 samples, and a clip of T tokens resynthesises to
exactly 640 T samples.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class MelConfig:
    """Log-magnitude mel spectrogram the detokenizer predicts and the vocoder reads."""

    sample_rate: int = 16000
    n_fft: int = 640  # 40 ms window: 4 hops, so each output sample hears at most 5 frames
    hop_length: int = 160  # 10 ms: 4 frames per 25 Hz token
    n_mels: int = 80
    log_floor: float = 1e-5  # natural log of max(magnitude, floor): -11.5 is silence


@dataclass
class TokenizerConfig:
    encoder_source: str = "bundled:whisper-tiny.en"
    # Which encoder layer the tokens quantise, 1-based; the last layer is taken after the
    # encoder's final LayerNorm (the features the decoder's adaptor reads). Layer 3, not the
    # last: Whisper's absolute positions explain 36% of the variance of the last layer's pooled
    # features (15% of layer 3's), so a codebook fitted there spends itself on where a frame
    # sits in the clip; per-token mean mels predict held-out mels with L1 1.01 from layer-3
    # tokens vs 1.20 from layer-4 tokens (1.68 from no tokens). docs/codec/README.md.
    layer: int = 3
    pool: int = 2  # encoder frames (50 Hz) averaged into one token: 25 Hz
    codebook_size: int = 1024
    # Streaming: the encoder is bidirectional, so a streamed token waits for `lookahead_tokens`
    # tokens of future audio and hears at most `context_tokens` tokens of the past.
    lookahead_tokens: int = 8  # 320 ms
    context_tokens: int = 100  # 4 s

    @property
    def samples_per_token(self) -> int:
        return 320 * self.pool  # Whisper: 160 samples per mel frame, 2 mel frames per encoder frame

    @property
    def token_rate(self) -> float:
        return 16000 / self.samples_per_token


@dataclass
class SpeakerEncoderConfig:
    """A small mel encoder whose time-pooled output conditions the detokenizer on a voice."""

    channels: int = 128
    n_layers: int = 4
    dim: int = 128


@dataclass
class Token2MelConfig:
    """Non-autoregressive token -> mel model with local attention (a bounded receptive field,
    so that streaming by recomputing a window equals the offline output exactly)."""

    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    ffn_dim: int = 768
    attn_left: int = 8  # tokens each position attends to on its left, per layer
    attn_right: int = 1  # ... and on its right: the look-ahead grows by this per layer
    upsample: int = 4  # mel frames per token
    post_dim: int = 128  # the post-net runs at 4x the token rate: narrower keeps it cheap
    post_kernel: int = 5  # post-net convolutions at the mel rate (asymmetric: mostly the past)
    post_layers: int = 2
    dropout: float = 0.1

    @property
    def receptive_field(self) -> tuple[int, int]:
        """(left, right) tokens an output frame of token t depends on (input conv, blocks with a
        causal depthwise conv each, post-net rounded up to whole tokens)."""
        post_left, post_right = self.post_layers * (self.post_kernel - 2), self.post_layers * 1
        left = 1 + self.n_layers * (self.attn_left + 2) + -(-post_left // self.upsample)
        right = 1 + self.n_layers * self.attn_right + -(-post_right // self.upsample)
        return left, right


@dataclass
class VocoderConfig:
    """Vocos-style vocoder: ConvNeXt backbone at the mel rate -> STFT magnitude and phase -> iSTFT."""

    dim: int = 192
    intermediate_dim: int = 576
    n_layers: int = 6
    kernel: int = 7  # depthwise convolutions are causal (no look-ahead) ...
    embed_right: int = 1  # ... except the input convolution, which sees one frame ahead

    def receptive_field(self, n_fft: int, hop_length: int) -> tuple[int, int]:
        """(left, right) mel frames that an output frame's samples depend on."""
        istft = -(-(n_fft // hop_length) // 2)  # same-padded iSTFT: ±2 frames for n_fft = 4 hops
        left = (self.kernel - 1 - self.embed_right) + self.n_layers * (self.kernel - 1) + istft
        right = self.embed_right + istft
        return left, right


@dataclass
class CodecConfig:
    mel: MelConfig = field(default_factory=MelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    speaker: SpeakerEncoderConfig = field(default_factory=SpeakerEncoderConfig)
    token2mel: Token2MelConfig = field(default_factory=Token2MelConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)

    def __post_init__(self) -> None:
        spt = self.tokenizer.samples_per_token
        if spt != self.token2mel.upsample * self.mel.hop_length:
            raise ValueError(
                f"a token spans {spt} samples but token2mel.upsample x mel.hop_length = "
                f"{self.token2mel.upsample} x {self.mel.hop_length}; make them equal"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CodecConfig":
        kinds = {"mel": MelConfig, "tokenizer": TokenizerConfig, "speaker": SpeakerEncoderConfig,
                 "token2mel": Token2MelConfig, "vocoder": VocoderConfig}
        d = _without_retired(d)
        unknown = set(d) - set(kinds)
        if unknown:
            raise ValueError(f"unknown codec config section(s) {sorted(unknown)}; expected {sorted(kinds)}")
        for k, v in d.items():
            if extra := set(v) - {f.name for f in fields(kinds[k])}:
                raise ValueError(f"unknown codec config key(s) {sorted(f'{k}.{e}' for e in extra)}")
        return cls(**{k: kinds[k](**v) for k, v in d.items()})


# Options earlier releases had and this one does not (the flow-matching mel refiner, the codebook's
# [mean, difference] features, the token-to-mel model's per-frame projection). A codec folder saved
# before still names them; with the value that meant "off" it is the same codec, any other value is not.
RETIRED = {"refiner": None, "tokenizer.frame_difference": 0.0, "token2mel.phase_projection": False}


def _without_retired(d: dict[str, Any]) -> dict[str, Any]:
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for key, off in RETIRED.items():
        *section, name = key.split(".")
        holder = d.get(section[0]) if section else d
        if not isinstance(holder, dict) or name not in holder:
            continue
        value = holder.pop(name)
        neutral = value is None if off is None else value is not None and value == off
        if not neutral:
            raise ValueError(f"codec config {key} = {json.dumps(value)}: this release no longer supports it "
                             f"(a codec saved with {key} = {json.dumps(off)} still loads)")
    return d
