"""Speech tokens: a 25 Hz single-codebook tokenizer on the frozen audio encoder, and a streaming
detokenizer (speaker encoder + token-to-mel + Vocos-style vocoder). See `codec.SpeechCodec`."""

from unisono.codec.codec import DetokenizerStream, SpeechCodec, default_codec_path
from unisono.codec.config import (
    CodecConfig,
    MelConfig,
    SpeakerEncoderConfig,
    Token2MelConfig,
    TokenizerConfig,
    VocoderConfig,
)

__all__ = [
    "CodecConfig", "DetokenizerStream", "MelConfig", "SpeakerEncoderConfig", "SpeechCodec", "Token2MelConfig",
    "TokenizerConfig", "VocoderConfig", "default_codec_path",
]
