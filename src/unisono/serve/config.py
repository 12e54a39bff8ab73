"""The server's settings: where it listens, who may call it, and how much one request may ask."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"  # loopback unless asked: a model server is not a public service by default
    port: int = 8000
    api_keys: tuple[str, ...] = ()  # Bearer keys; empty: no authentication
    max_upload_mb: float = 25.0  # request bodies (OpenAI's limit for audio files)
    max_audio_s: float = 600.0  # seconds of audio in one request
    max_concurrent_per_key: int = 4  # requests of one key (or of everyone, without keys) at a time; more: 429
    request_timeout_s: float = 300.0  # a request still working after this is cancelled: 504
    max_tokens: int = 1024  # the most a chat completion may ask for
    cors_origins: tuple[str, ...] = ()  # browsers' cross-origin access: off unless origins are named

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_audio_s", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_concurrent_per_key < 1:
            raise ValueError(f"max_concurrent_per_key must be >= 1, got {self.max_concurrent_per_key}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if any(not key or key != key.strip() for key in self.api_keys):
            raise ValueError("API keys must be non-empty and have no surrounding whitespace")
