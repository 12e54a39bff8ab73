"""Recognisers that transcribe clips for the data engine, named by a short spec string.

    whisper[:beamN][:model=DIR]      faster-whisper; default the bundled Whisper tiny.en, greedy
    pocketsphinx                     CMU PocketSphinx with its bundled en-us model and LM
    unisono:DIR                      a unisono checkpoint directory (MTP decoding)
    openai:URL[:model=NAME]          any server with OpenAI's POST /v1/audio/transcriptions

Each backend says which languages it can transcribe (`languages`, None: any); the pipeline
asks only those that can. Each one loads its model once, when built; build backends inside the
worker process that uses them (see `unisono.data.process`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

SAMPLE_RATE = 16000


class TranscriptionError(RuntimeError):
    """A recogniser failed on a clip (e.g. a server error); the clip is rejected, the run goes on."""


class ASRBackend(Protocol):
    name: str  # stable label stored in each clip's annotations ("whisper-tiny.en", ...)
    languages: frozenset[str] | None  # None: any language

    def transcribe(self, audio: np.ndarray, language: str) -> str: ...


def supports(backend: ASRBackend, language: str) -> bool:
    return backend.languages is None or language in backend.languages


@dataclass
class WhisperConfig:
    model_dir: Path | None = None  # None: the bundled Whisper tiny.en (CTranslate2)
    beam_size: int = 1
    compute_type: str = "int8"
    threads: int = 1  # one per worker process: the pool gives the parallelism


class WhisperBackend:
    def __init__(self, config: WhisperConfig | None = None):
        from faster_whisper import WhisperModel

        from unisono.model.ct2 import bundled_whisper_path

        self.config = config = config or WhisperConfig()
        path = config.model_dir or bundled_whisper_path()
        self.model = WhisperModel(str(path), device="cpu", compute_type=config.compute_type,
                                  cpu_threads=config.threads, num_workers=1)
        self.languages = None if self.model.model.is_multilingual else frozenset({"en"})
        label = "tiny.en" if config.model_dir is None else Path(path).name
        self.name = f"whisper-{label}" + ("" if config.beam_size == 1 else f"-beam{config.beam_size}")

    def transcribe(self, audio: np.ndarray, language: str) -> str:
        segments, _ = self.model.transcribe(
            audio, beam_size=self.config.beam_size, language=language if self.languages is None else "en",
            temperature=0.0,  # deterministic: a re-run gives the same transcript
            vad_filter=False,  # the pipeline has already cut the speech
            condition_on_previous_text=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()


class PocketSphinxBackend:
    """CMU PocketSphinx: an HMM/n-gram recogniser, independent of Whisper in model and data."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.decoder = Decoder(loglevel="FATAL")
        self.languages = frozenset({"en"})
        self.name = "pocketsphinx-en-us"

    def transcribe(self, audio: np.ndarray, language: str) -> str:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        # a fresh front end per clip: PocketSphinx carries its noise estimate across utterances,
        # which would make a clip's text depend on the clips processed before it
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, no_search=False, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""


class UnisonoBackend:
    def __init__(self, model_dir: str | Path):
        from unisono.model.unisono import Unisono

        self.model = Unisono.load(model_dir)
        self.languages = None
        self.name = f"unisono-{Path(model_dir).name}"

    def transcribe(self, audio: np.ndarray, language: str) -> str:
        from unisono.model.vocab import LANGUAGES

        return self.model.transcribe(audio, language=language if language in LANGUAGES else None).text


@dataclass
class OpenAIConfig:
    url: str  # the API base (".../v1") or the full ".../audio/transcriptions" address
    model: str = "whisper-1"
    key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, when it is set
    timeout_s: float = 120.0


class OpenAIBackend:
    """Any server speaking OpenAI's POST /v1/audio/transcriptions (multipart: file, model)."""

    def __init__(self, config: OpenAIConfig, transport: Any = None):
        import httpx

        self.config = config
        url = config.url.rstrip("/")
        self.endpoint = url if url.endswith("/audio/transcriptions") else url + "/audio/transcriptions"
        headers = {"Authorization": f"Bearer {key}"} if (key := os.environ.get(config.key_env)) else {}
        self.client = httpx.Client(headers=headers, timeout=config.timeout_s, transport=transport)
        self.languages = None
        self.name = f"openai-{config.model}"

    def transcribe(self, audio: np.ndarray, language: str) -> str:
        import httpx
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        data = {"model": self.config.model, "response_format": "json", "language": language}
        try:
            r = self.client.post(self.endpoint, files={"file": ("clip.wav", buf.getvalue(), "audio/wav")}, data=data)
        except httpx.HTTPError as e:
            raise TranscriptionError(f"{self.endpoint}: {e}") from e
        if r.status_code != 200:
            raise TranscriptionError(f"{self.endpoint} answered {r.status_code}: {r.text[:200]}")
        try:
            return str(r.json()["text"]).strip()
        except (ValueError, KeyError, TypeError) as e:
            raise TranscriptionError(f"{self.endpoint}: no 'text' in the answer: {r.text[:200]}") from e


DEFAULT_SHORT_FORM = ("whisper", "pocketsphinx")
# The third recogniser for ROVER: only two independent English recognisers ship offline, so the
# default third is Whisper again with beam search; name a unisono checkpoint or a server instead
# when one is at hand.
DEFAULT_LONG_FORM = ("whisper", "pocketsphinx", "whisper:beam5")


def build_backend(spec: str, *, threads: int = 1, transport: Any = None) -> ASRBackend:
    """The backend a spec names (see the module docstring), its model loaded."""
    kind, _, rest = spec.partition(":")
    parts = [p for p in rest.split(":") if p] if kind != "openai" else []
    if kind == "whisper":
        cfg = WhisperConfig(threads=threads)
        for p in parts:
            if p.startswith("beam") and p[4:].isdigit():
                cfg.beam_size = int(p[4:])
            elif p.startswith("model="):
                cfg.model_dir = Path(p[len("model="):])
            elif p in ("int8", "float32", "int8_float32"):
                cfg.compute_type = p
            else:
                raise ValueError(f"{spec!r}: unknown whisper option {p!r} (beamN, model=DIR, int8, float32)")
        return WhisperBackend(cfg)
    if kind == "pocketsphinx":
        if parts:
            raise ValueError(f"{spec!r}: pocketsphinx takes no options")
        return PocketSphinxBackend()
    if kind == "unisono":
        if not rest:
            raise ValueError(f"{spec!r}: name the checkpoint directory, e.g. unisono:runs/asr/final")
        return UnisonoBackend(rest)
    if kind == "openai":
        # URLs hold ':' themselves: options come after the URL as ":model=NAME" / ":key_env=VAR"
        url, options = rest, {}
        for key in ("model", "key_env"):
            marker = f":{key}="
            if marker in url:
                url, _, value = url.partition(marker)
                value, _, tail = value.partition(":")
                options[key] = value
                url += (":" + tail) if tail else ""
        if not url:
            raise ValueError(f"{spec!r}: give the server's URL, e.g. openai:http://localhost:8000/v1")
        return OpenAIBackend(OpenAIConfig(url=url, **options), transport=transport)
    raise ValueError(f"unknown recogniser {spec!r}; known: whisper, pocketsphinx, unisono:DIR, openai:URL")


def check_spec(spec: str) -> None:
    """Refuse a malformed spec or a missing model folder before any worker starts (loads nothing)."""
    kind, _, rest = spec.partition(":")
    if kind not in ("whisper", "pocketsphinx", "unisono", "openai"):
        raise ValueError(f"unknown recogniser {spec!r}; known: whisper, pocketsphinx, unisono:DIR, openai:URL")
    if kind == "unisono" and rest and not (Path(rest) / "config.json").is_file():
        raise ValueError(f"{spec!r}: no unisono checkpoint at {rest} (config.json is missing)")
    if kind == "whisper":
        for p in (p for p in rest.split(":") if p):
            if p.startswith("model=") and not Path(p[len("model="):]).is_dir():
                raise ValueError(f"{spec!r}: no model folder {p[len('model='):]}")
            if not (p.startswith(("beam", "model=")) or p in ("int8", "float32", "int8_float32")):
                raise ValueError(f"{spec!r}: unknown whisper option {p!r} (beamN, model=DIR, int8, float32)")
    if kind in ("unisono", "openai") and not rest:
        raise ValueError(f"{spec!r}: name the checkpoint directory or the server's URL")


def build_backends(specs: Sequence[str], *, threads: int = 1) -> list[ASRBackend]:
    return [build_backend(s, threads=threads) for s in specs]


__all__ = [
    "ASRBackend", "DEFAULT_LONG_FORM", "DEFAULT_SHORT_FORM", "OpenAIBackend", "OpenAIConfig", "PocketSphinxBackend",
    "TranscriptionError", "UnisonoBackend", "WhisperBackend", "WhisperConfig", "build_backend", "build_backends", "check_spec",
    "supports",
]
