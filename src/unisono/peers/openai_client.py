"""One client for any OpenAI-compatible server (OpenAI, vLLM, whisper.cpp's server, ...).

It is the official `openai` package underneath; this module only fixes what unisono needs of it:
the API base from whatever address the user gave, the key from a named environment variable (a
local server takes none, and then no Authorization header is sent), 16 kHz audio sent as a 16-bit
WAV, and every failure (unreachable server, an error status, an answer without the expected field)
as one `ServerError` whose message names the server and says what went wrong.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

SAMPLE_RATE = 16000
# a user may give an endpoint's full address; the client wants the API base in front of it
ENDPOINTS = ("/audio/transcriptions", "/chat/completions")


class ServerError(RuntimeError):
    """An OpenAI-compatible server failed on one request; the message is one line naming the server."""


@dataclass
class ServerConfig:
    url: str  # the API base (".../v1"), or an endpoint's full address (".../v1/audio/transcriptions")
    key_env: str = "OPENAI_API_KEY"  # the key is read from this variable; unset: no key is sent
    timeout_s: float = 120.0
    # the openai package retries connection errors, 408, 409, 429 and 5xx with exponential backoff;
    # a transient server hiccup should not cost a clip
    retries: int = 2


def api_base(url: str) -> str:
    """The API base of `url`: "http://h:8000/v1/audio/transcriptions/" -> "http://h:8000/v1"."""
    url = url.rstrip("/")
    for endpoint in ENDPOINTS:
        if url.endswith(endpoint):
            return url[: -len(endpoint)]
    return url


def wav_bytes(audio: np.ndarray) -> bytes:
    """A 16 kHz mono float clip as a 16-bit PCM WAV file, the format every such server reads."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class OpenAIClient:
    def __init__(self, config: ServerConfig):
        from openai import OpenAI, Omit

        self.config = config
        self.base_url = api_base(config.url)
        key = os.environ.get(config.key_env)
        # the package refuses to start without a key; a local server needs none, so a placeholder
        # is given and the header it would make is left out of every request
        self.client = OpenAI(api_key=key or "unused", base_url=self.base_url, timeout=config.timeout_s,
                             max_retries=config.retries)
        self._request: dict[str, Any] = {} if key else {"extra_headers": {"Authorization": Omit()}}

    def transcribe(self, audio: np.ndarray, *, model: str, language: str | None = None) -> str:
        """Text of one 16 kHz mono clip (POST /audio/transcriptions)."""
        from openai import omit

        answer = self._call("/audio/transcriptions", lambda: self.client.audio.transcriptions.create(
            file=("clip.wav", wav_bytes(audio), "audio/wav"), model=model, language=language or omit,
            response_format="json", **self._request))
        text = getattr(answer, "text", None)  # a str answer: the body was not JSON
        if not isinstance(text, str):
            raise ServerError(f"{self.base_url}/audio/transcriptions: no 'text' in the answer: {str(answer)[:200]}")
        return text.strip()

    def chat(self, messages: Sequence[dict[str, str]], *, model: str, temperature: float = 0.0) -> str:
        """The reply to `messages` (POST /chat/completions)."""
        answer = self._call("/chat/completions", lambda: self.client.chat.completions.create(
            model=model, messages=list(messages), temperature=temperature, **self._request))
        try:
            content = answer.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise ServerError(f"{self.base_url}/chat/completions: no message in the answer: {str(answer)[:200]}")
        return content.strip()

    def _call(self, endpoint: str, request: Callable[[], Any]) -> Any:
        import openai

        where = self.base_url + endpoint
        try:
            return request()
        except openai.APIStatusError as e:
            raise ServerError(f"{where} answered {e.status_code}: {e.response.text[:200]}") from e
        except openai.APIConnectionError as e:  # unreachable, refused, timed out
            cause = f" ({e.__cause__})" if e.__cause__ else ""
            raise ServerError(f"{where}: {e}{cause}") from e
        except openai.OpenAIError as e:
            raise ServerError(f"{where}: {type(e).__name__}: {e}") from e
