"""Offline speech synthesisers: espeak-ng, flite and festival, every installed voice; and the
neural voices Piper and Kokoro (`neural_voices.py`) where their packages are installed.

Each engine is a command-line program. `available_voices()` asks the installed programs which
voices they have; `sample_params()` draws a speaking rate and pitch for one utterance;
`render()` runs the program on a text file and returns 16 kHz mono float32 audio.

Mandarin goes through espeak-ng's `cmn-latn-pinyin` voice. Its sibling `cmn` ("latin as
English") reads many Han characters as their pinyin *spelling with tone digits* in English
("这" -> "zhe four"), so it is not used; `cmn-latn-pinyin` reads them as Mandarin syllables.

Rates and pitches are stored as the engine's own settings (espeak words per minute and pitch
0-99; flite/festival duration stretch and F0 target in Hz; HTS speed factor and semitone shift)
together with the engine-independent `rate` factor (>1 is faster); the neural voices' controls
are described in `neural_voices.py`.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from unisono.audio.io import load_audio
from unisono.data import neural_voices
from unisono.data.neural_voices import NEURAL_ENGINES, NeuralVoiceError

# The rule-based and statistical engines: fast, and the default of `unisono data synth`.
ENGINES = ("espeak-ng", "flite", "festival")
# Every engine, with the neural voices (optional packages, ~1-6x real time on a core).
ALL_ENGINES = ENGINES + NEURAL_ENGINES
ESPEAK_ENGLISH = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
                  "en-029", "en-us-nyc")
ESPEAK_MANDARIN = ("cmn-latn-pinyin",)
# flite's awb_time speaks clock times only.
FLITE_SKIP = ("awb_time",)
# Mean F0 (Hz) of each fixed voice: pitch is drawn around the voice's own register.
VOICE_F0 = {"kal": 105, "kal16": 105, "awb": 110, "rms": 100, "slt": 165, "kal_diphone": 105, "ked_diphone": 110}
FESTIVAL_VOICE_DIRS = (Path("/usr/share/festival/voices"),)
TIMEOUT_S = 60


class SynthesisError(RuntimeError):
    """The engine failed or produced no audio; the message has its stderr."""


@dataclass(frozen=True)
class Voice:
    engine: str  # one of ALL_ENGINES
    name: str  # the engine's voice name: "en-us+m3", "slt", "cmu_us_slt_arctic_hts", "en_US-joe-medium", "jf_alpha"
    language: str  # "en" or "zh"

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"


def _run(cmd: list[str], timeout: float = TIMEOUT_S) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SynthesisError(f"{cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SynthesisError(f"{cmd[0]} took over {timeout:.0f} s") from None
    if res.returncode != 0:
        raise SynthesisError(f"{cmd[0]} exited {res.returncode}: {res.stderr.strip()[-300:]}")
    return res.stdout


@lru_cache(maxsize=None)
def espeak_variants() -> tuple[str, ...]:
    """Variant names ("m3", "f2", "klatt", ...), from `espeak-ng --voices=variant`."""
    if not shutil.which("espeak-ng"):
        return ()
    out = _run(["espeak-ng", "--voices=variant"])
    names = []
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("!v/"):
            names.append(cols[4][3:])
    return tuple(sorted(set(names)))


@lru_cache(maxsize=None)
def _espeak_voices() -> frozenset[str]:
    out = _run(["espeak-ng", "--voices"])
    return frozenset(line.split()[1].lower() for line in out.splitlines()[1:] if len(line.split()) > 1)


@lru_cache(maxsize=None)
def flite_voices() -> tuple[str, ...]:
    if not shutil.which("flite"):
        return ()
    out = _run(["flite", "-lv"])
    names = out.split(":", 1)[-1].split()
    return tuple(n for n in names if n not in FLITE_SKIP)


@lru_cache(maxsize=None)
def festival_voices() -> tuple[str, ...]:
    """Voices installed under festival's voice folders (each is a folder with festvox/)."""
    if not shutil.which("text2wave"):
        return ()
    found = []
    for root in FESTIVAL_VOICE_DIRS:
        if root.is_dir():
            found += [d.name for d in root.glob("*/*") if (d / "festvox").is_dir()]
    return tuple(sorted(found))


def available_voices(languages: tuple[str, ...] = ("en", "zh"), engines: tuple[str, ...] = ENGINES) -> list[Voice]:
    """Every (engine, voice, variant) combination installed here, for `languages`."""
    voices: list[Voice] = []
    if "espeak-ng" in engines and shutil.which("espeak-ng"):
        installed = _espeak_voices()
        variants = espeak_variants()
        for language, bases in (("en", ESPEAK_ENGLISH), ("zh", ESPEAK_MANDARIN)):
            if language not in languages:
                continue
            for base in bases:
                if base in installed:
                    voices += [Voice("espeak-ng", f"{base}+{v}", language) for v in variants]
    if "en" in languages and "flite" in engines:
        voices += [Voice("flite", v, "en") for v in flite_voices()]
    if "en" in languages and "festival" in engines:
        voices += [Voice("festival", v, "en") for v in festival_voices()]
    for engine in NEURAL_ENGINES:
        if engine in engines:
            voices += [Voice(engine, v, language) for language in languages
                       for v in neural_voices.voice_names(engine, language)]
    return voices


def engine_problems(engines: tuple[str, ...], languages: tuple[str, ...]) -> dict[str, str]:
    """Engines asked for that cannot speak any of `languages` here, each with the reason."""
    programs = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}
    problems = {}
    for engine in engines:
        if engine in programs and not shutil.which(programs[engine]):
            problems[engine] = f"{programs[engine]} is not installed (apt-get install {engine})"
        elif engine in NEURAL_ENGINES:
            reasons = [neural_voices.missing(engine, lang) for lang in languages]
            if all(reasons):
                problems[engine] = "; ".join(dict.fromkeys(reasons))
    return problems


def sample_params(voice: Voice, rng: np.random.Generator) -> dict:
    """A speaking rate and pitch for one utterance, within what still sounds like speech."""
    if voice.engine in NEURAL_ENGINES:
        return neural_voices.sample_params(voice.engine, rng)
    rate = float(np.round(rng.uniform(0.8, 1.25), 3))
    if voice.engine == "espeak-ng":
        return {"rate": rate, "wpm": int(round(175 * rate)), "pitch": int(rng.integers(25, 76))}
    if voice.engine == "flite" or voice.name.endswith("_diphone"):
        f0 = int(round(VOICE_F0.get(voice.name, 110) * rng.uniform(0.85, 1.2)))
        return {"rate": rate, "duration_stretch": round(1 / rate, 3), "f0_mean_hz": f0}
    # festival HTS voices: hts_engine's own speed factor and a pitch shift in semitones.
    return {"rate": rate, "hts_speed": rate, "semitones": round(float(rng.uniform(-2.5, 2.5)), 2)}


def _festival_setup(voice: Voice, params: dict) -> str:
    """Scheme that selects the voice (which resets its parameters) and sets rate and pitch."""
    if "duration_stretch" in params:
        setup = (f"(Parameter.set 'Duration_Stretch {params['duration_stretch']}) "
                 f"(set! int_lr_params (list (list 'target_f0_mean {params['f0_mean_hz']}) "
                 "(list 'target_f0_std 20) (list 'model_f0_mean 170) (list 'model_f0_std 34)))")
    else:
        setup = ("(Parameter.set 'Duration_Stretch 1.0) "
                 f"(set! hts_engine_params (append hts_engine_params (list (list \"-r\" {params['hts_speed']}) "
                 f"(list \"-fm\" {params['semitones']}))))")
    return f"(begin (voice_{voice.name}) {setup})"


class FestivalSession:
    """One festival process kept running, fed one utterance at a time on its standard input.

    Starting festival and loading a voice costs ~0.5 s; synthesising a sentence ~0.1 s. So
    each worker keeps one process and writes, per utterance, the voice setup, the synthesis
    and a marker file created when festival reaches it (festival buffers its standard output
    when it is a pipe, so output cannot signal completion). A process that dies or hangs is
    replaced on the next call.
    """

    def __init__(self, timeout: float = TIMEOUT_S):
        self.timeout = timeout
        self.folder = Path(tempfile.mkdtemp(prefix="unisono-festival-"))
        self.proc: subprocess.Popen | None = None
        self.count = 0

    def _start(self) -> None:
        self.log = open(self.folder / "festival.log", "ab")
        self.proc = subprocess.Popen(["festival"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=self.log, text=True)

    def _stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _log_tail(self) -> str:
        return (self.folder / "festival.log").read_bytes()[-300:].decode(errors="replace").strip()

    def synthesise(self, setup: str, text: str, wav: Path) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.count += 1
        done = self.folder / f"{self.count}.done"
        quoted = text.replace("\\", " ").replace('"', '\\"').replace("\n", " ")
        command = (f"{setup} (utt.save.wave (utt.synth (Utterance Text \"{quoted}\")) \"{wav}\" 'riff) "
                   f"(fclose (fopen \"{done}\" \"w\"))\n")
        try:
            self.proc.stdin.write(command)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._stop()
            raise SynthesisError(f"festival exited: {self._log_tail()}") from None
        deadline = time.monotonic() + self.timeout
        while not done.exists():
            if self.proc.poll() is not None:
                self.proc = None
                raise SynthesisError(f"festival exited: {self._log_tail()}")
            if time.monotonic() > deadline:
                self._stop()
                raise SynthesisError(f"festival took over {self.timeout:.0f} s")
            time.sleep(0.002)
        done.unlink()

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@lru_cache(maxsize=1)
def festival_session() -> FestivalSession:
    """This process's festival (one per worker process)."""
    session = FestivalSession()
    atexit.register(session.close)
    return session


def check_voice(voice: Voice) -> None:
    """Refuse a voice the engine does not have.

    espeak-ng and flite quietly fall back to a default voice on an unknown name, and a
    festival session would keep the previous voice: every clip would be mislabelled.
    """
    if voice.engine == "espeak-ng":
        base, _, variant = voice.name.partition("+")
        if base.lower() not in _espeak_voices() or (variant and variant not in espeak_variants()):
            raise SynthesisError(f"espeak-ng has no voice {voice.name!r} (see `espeak-ng --voices` and `--voices=variant`)")
    elif voice.engine == "flite" and voice.name not in flite_voices():
        raise SynthesisError(f"flite has no voice {voice.name!r} (installed: {', '.join(flite_voices())})")
    elif voice.engine == "festival" and voice.name not in festival_voices():
        raise SynthesisError(f"festival has no voice {voice.name!r} (installed: {', '.join(festival_voices())})")
    elif voice.engine in NEURAL_ENGINES:
        reason = neural_voices.missing(voice.engine, voice.language)
        if reason:
            raise SynthesisError(reason)
        names = neural_voices.voice_names(voice.engine, voice.language)
        if voice.name not in names:
            raise SynthesisError(f"{voice.engine} has no voice {voice.name!r} (installed: {', '.join(names)})")


def _command(voice: Voice, params: dict, text_file: Path, wav: Path) -> list[str]:
    if voice.engine == "espeak-ng":
        return ["espeak-ng", "-v", voice.name, "-s", str(params["wpm"]), "-p", str(params["pitch"]),
                "-f", str(text_file), "-w", str(wav)]
    if voice.engine == "flite":
        return ["flite", "-voice", voice.name, "--setf", f"duration_stretch={params['duration_stretch']}",
                "--setf", f"int_f0_target_mean={params['f0_mean_hz']}", "-f", str(text_file), "-o", str(wav)]
    if voice.engine == "festival":
        return ["text2wave", "-eval", _festival_setup(voice, params), "-o", str(wav), str(text_file)]
    raise ValueError(f"unknown engine {voice.engine!r}; choose from {', '.join(ENGINES)}")


def render(voice: Voice, text: str, params: dict, sample_rate: int = 16000) -> np.ndarray:
    """Speak `text` with `voice` and `params`; mono float32 at `sample_rate`."""
    if voice.engine not in ALL_ENGINES:
        raise ValueError(f"unknown engine {voice.engine!r}; choose from {', '.join(ALL_ENGINES)}")
    check_voice(voice)
    if voice.engine in NEURAL_ENGINES:
        try:
            return neural_voices.render(voice.engine, voice.name, voice.language, text, params, sample_rate)
        except NeuralVoiceError as e:
            raise SynthesisError(str(e)) from None
    with tempfile.TemporaryDirectory(prefix="unisono-tts-") as tmp:
        text_file, wav = Path(tmp) / "text.txt", Path(tmp) / "out.wav"
        if voice.engine == "festival":
            festival_session().synthesise(_festival_setup(voice, params), text, wav)
        else:
            text_file.write_text(text + "\n", encoding="utf-8")
            _run(_command(voice, params, text_file, wav))
        if not wav.exists() or wav.stat().st_size <= 44:
            raise SynthesisError(f"{voice.id} wrote no audio for {text[:60]!r}")
        return load_audio(wav, sample_rate)
