"""unisono: one audio-language backbone, three modes (ASR, TTS, realtime)."""

__version__ = "0.1.0"
