"""TTS evaluation: every system speaks the same prompts; the same recognisers and measures hear them all.

    prompt (text, language, instruction, reference voice) ─► system ─► 16 kHz audio ─► scores

A prompt file is JSON lines (`prompts/tts.jsonl` is the repository's fixed English and Mandarin
set, written for it and in no corpus):

    {"id": "en-25", "text": "...", "language": "en", "instruct": "Speak slowly.",
     "asked": {"rate": "slow"}, "pair_of": "en-01", "reference": "lj"}

`instruct` is said to the system in words (unisono) or as its engine's controls (the peers);
`asked` is what the instruction asks in measurable terms, and `pair_of` names the prompt with the
same text and no instruction, against which the change is measured (`speech_scores.adherence`).
`reference` is a named voice (`unisono speak --voice`) or an audio path relative to the file.

Systems: `unisono` (the embedded model), `unisono:DIR`, and the peers `piper` (en_US-joe),
`kokoro` (Kokoro-82M, English and Mandarin), `espeak-ng` and `flite` (English): a peer that is
not installed is skipped with the reason, a prompt in a language a system does not speak is
skipped for that system. Per clip: each recogniser's text and errors (WER in English, CER in
Mandarin), speaker similarity to the reference (prompts that name one), DNSMOS, delivery (rate,
F0), synthesis time and the time to the first audio (streamed for unisono, the whole clip for the
peers). Against the first system, paired-bootstrap intervals of the error-rate and DNSMOS
differences over the prompts both spoke.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from unisono.eval.metrics import ErrorCounts, count_errors, difference_interval, mean_difference_interval, total
from unisono.eval.normalize import make_scoring
from unisono.eval.speech_scores import adherence, check_asked, measure_delivery, Delivery

DEFAULT_PROMPTS = Path(__file__).parent / "prompts" / "tts.jsonl"
LANGUAGES = ("en", "zh")
PEERS = ("piper", "kokoro", "espeak-ng", "flite")
# What the peers are told for an asked control: the data engine's range of rates, a few semitones.
PEER_RATE = {"slow": 0.8, "fast": 1.25}
PEER_SEMITONES = {"low": -3.0, "high": 3.0}


@dataclass
class TTSPrompt:
    id: str
    text: str
    language: str = "en"
    instruct: str | None = None
    asked: dict = field(default_factory=dict)
    pair_of: str | None = None
    reference: str | None = None  # a named voice or an audio path (resolved against the prompt file)


def read_prompts(path: Path) -> list[TTSPrompt]:
    """The prompts of a JSONL file; a broken row is an error naming its line."""
    from unisono.eval.prompt_file import dataclass_row, read_prompt_file

    def make(row: dict) -> TTSPrompt:
        prompt = dataclass_row(TTSPrompt, row)
        if not isinstance(prompt.text, str) or not prompt.text.strip():
            raise ValueError("'text' must be a non-empty string")
        if prompt.language not in LANGUAGES:
            raise ValueError(f"language {prompt.language!r}: choose from {', '.join(LANGUAGES)}")
        prompt.asked = check_asked(prompt.asked or {})
        if prompt.asked and not prompt.pair_of:
            raise ValueError("'asked' needs 'pair_of', the prompt of the same text without the instruction")
        if prompt.reference and Path(prompt.reference).suffix:
            prompt.reference = str((Path(path).parent / prompt.reference).resolve())
        return prompt

    prompts = read_prompt_file(path, make)
    ids = {p.id for p in prompts}
    for p in prompts:
        if p.pair_of and p.pair_of not in ids:
            raise ValueError(f"{path}: prompt {p.id} is paired with {p.pair_of!r}, which is not in the file")
    return prompts


# ---- systems -----------------------------------------------------------------------------------
@dataclass
class Rendering:
    audio: np.ndarray  # 16 kHz float32
    seconds: float  # synthesis wall time
    first_audio_s: float  # call -> first audio chunk
    ended: bool | None = None  # the model ended every sentence itself (None: not a model with a guard)


@dataclass
class TTSSystem:
    name: str
    languages: tuple[str, ...]
    speak: Callable[[TTSPrompt, int], Rendering]


def _unisono(option: str, threads: int) -> TTSSystem:
    import torch

    from unisono.model.unisono import Unisono
    from unisono.modes.tts import TTSOptions, speak_stream

    torch.set_num_threads(threads)
    model = Unisono.load(option if option and option != "default" else None)
    if model.vocab.n_speech == 0:
        raise ValueError(f"the model {option or 'unisono'} has no speech tokens: it cannot speak")

    def speak(prompt: TTSPrompt, seed: int) -> Rendering:
        records, chunks, first = [], [], None
        started = time.perf_counter()
        for chunk in speak_stream(model, prompt.text, voice=prompt.reference,
                                  options=TTSOptions(instruct=prompt.instruct, seed=seed), report=records.append):
            first = first if first is not None else time.perf_counter() - started
            chunks.append(chunk)
        seconds = time.perf_counter() - started
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        ended = not any("length guard" in w for w in records[0].warnings) if records else None
        return Rendering(audio, seconds, first if first is not None else seconds, ended)

    return TTSSystem(f"unisono:{option}" if option else "unisono", LANGUAGES, speak)


def _peer_params(engine: str, asked: dict) -> dict:
    from unisono.data import neural_voices
    from unisono.data.engines import VOICE_F0

    rate = PEER_RATE.get(asked.get("rate"), 1.0)
    semitones = PEER_SEMITONES.get(asked.get("pitch"), 0.0)
    if engine == "piper":
        return {"rate": rate, "length_scale": neural_voices.piper_length_scale(rate), "noise_scale": 0.667,
                "noise_w_scale": 0.8, "semitones": semitones}
    if engine == "kokoro":
        return {"rate": rate, "speed": rate, "semitones": semitones}
    if engine == "espeak-ng":
        return {"rate": rate, "wpm": int(round(175 * rate)), "pitch": int(round(50 + 6.5 * semitones))}
    return {"rate": rate, "duration_stretch": round(1 / rate, 3),
            "f0_mean_hz": int(round(VOICE_F0["slt"] * 2 ** (semitones / 12)))}


def _peer(engine: str) -> TTSSystem:
    from unisono.data import neural_voices
    from unisono.data.engines import SynthesisError, Voice, check_voice, render

    voices = {"piper": {"en": Voice("piper", neural_voices.PIPER_VOICE, "en")},
              "kokoro": {lang: Voice("kokoro", "jf_alpha", lang) for lang in LANGUAGES},
              "espeak-ng": {"en": Voice("espeak-ng", "en-us", "en"), "zh": Voice("espeak-ng", "cmn", "zh")},
              "flite": {"en": Voice("flite", "slt", "en")}}[engine]
    usable = {}
    reasons = []
    for language, voice in voices.items():
        try:
            check_voice(voice)
            usable[language] = voice
        except SynthesisError as e:
            reasons.append(str(e))
    if not usable:
        raise ValueError(f"{engine} cannot speak here: {'; '.join(dict.fromkeys(reasons))}")
    if engine in ("piper", "kokoro") and any(PEER_SEMITONES.values()) and not neural_voices.pitch_shift_available():
        raise ValueError(f"{engine}'s pitch control needs praat-parselmouth: {neural_voices.INSTALL['pitch']}")

    def speak(prompt: TTSPrompt, seed: int) -> Rendering:
        started = time.perf_counter()
        audio = render(usable[prompt.language], prompt.text, _peer_params(engine, prompt.asked))
        seconds = time.perf_counter() - started
        return Rendering(audio, seconds, seconds)

    return TTSSystem(engine, tuple(usable), speak)


def build_system(spec: str, threads: int = 2) -> TTSSystem:
    kind, _, option = spec.partition(":")
    if kind == "unisono":
        return _unisono(option, threads)
    if kind in PEERS and not option:
        return _peer(kind)
    raise ValueError(f"unknown TTS system {spec!r}: unisono, unisono:DIR, {', '.join(PEERS)}")


# ---- scoring -----------------------------------------------------------------------------------
@dataclass
class SystemResult:
    name: str
    items: list[dict] = field(default_factory=list)  # one per prompt spoken (see `score_clip`)
    skipped: list[dict] = field(default_factory=list)  # {"id", "reason"}

    def spoken(self, language: str | None = None) -> list[dict]:
        return [i for i in self.items if language is None or i["language"] == language]

    def counts(self, recognizer: str, language: str) -> ErrorCounts | None:
        scored = [ErrorCounts.from_dict(i["counts"][recognizer]) for i in self.spoken(language) if recognizer in i["counts"]]
        return total(scored) if scored else None

    def mean(self, key: str, sub: str | None = None) -> float | None:
        values = [i[key] if sub is None else i[key][sub] for i in self.items if i.get(key) is not None]
        return float(np.mean(values)) if values else None

    def summary(self, recognizers: Iterable[str]) -> dict:
        out = {"name": self.name, "prompts": len(self.items), "skipped": len(self.skipped)}
        for rec in recognizers:
            for language in LANGUAGES:
                c = self.counts(rec, language)
                out[f"{'cer' if language == 'zh' else 'wer'}_{language} {rec}"] = None if c is None else c.rate
        adhered = [a["followed"] for i in self.items for a in (i.get("adherence") or {}).values()]
        audio = sum(i["audio_s"] for i in self.items)
        ended = [i["ended"] for i in self.items if i["ended"] is not None]
        out.update({
            "similarity": self.mean("similarity"),
            "dnsmos": self.mean("dnsmos", "ovrl"),
            "adherence": (sum(adhered), len(adhered)) if adhered else None,
            "rtf": sum(i["seconds"] for i in self.items) / audio if audio else None,
            "first_audio_s": statistics.median(i["first_audio_s"] for i in self.items) if self.items else None,
            "ended": (sum(ended), len(ended)) if ended else None,
        })
        return out


def score_clip(prompt: TTSPrompt, rendering: Rendering, recognizers: list, similarity=None, reference_audio=None,
               use_dnsmos: bool = True) -> dict:
    from unisono.eval.speech_scores import dnsmos

    audio = rendering.audio
    scoring = make_scoring(prompt.language)
    item = {"id": prompt.id, "language": prompt.language, "text": prompt.text, "instruct": prompt.instruct,
            "audio_s": round(len(audio) / 16000, 3), "seconds": round(rendering.seconds, 4),
            "first_audio_s": round(rendering.first_audio_s, 4), "ended": rendering.ended,
            "hypotheses": {}, "counts": {}}
    for rec in recognizers:
        if rec.languages is not None and prompt.language not in rec.languages:
            continue
        hypothesis = rec.transcribe(audio, prompt.language) if len(audio) else ""
        item["hypotheses"][rec.name] = hypothesis
        item["counts"][rec.name] = count_errors(scoring.normalize(prompt.text), scoring.normalize(hypothesis),
                                                scoring.unit).to_dict()
    item["delivery"] = measure_delivery(audio, prompt.text, prompt.language).to_dict()
    item["similarity"] = (round(similarity(audio, reference_audio), 4)
                          if similarity is not None and reference_audio is not None and len(audio) else None)
    item["dnsmos"] = {k: round(v, 3) for k, v in dnsmos(audio).items()} if use_dnsmos and len(audio) else None
    return item


def add_adherence(result: SystemResult, prompts: list[TTSPrompt]) -> None:
    """Each instructed clip against the same system's clip of its pair."""
    by_id = {i["id"]: i for i in result.items}
    for p in prompts:
        if p.asked and p.id in by_id and p.pair_of in by_id:
            instructed, neutral = (Delivery(**by_id[k]["delivery"]) for k in (p.id, p.pair_of))
            by_id[p.id]["adherence"] = adherence(p.asked, instructed, neutral)


def audio_folder(system: str) -> str:
    """The folder name of a system's clips in a report ("unisono:runs/x" -> "unisono_runs_x")."""
    return system.replace(":", "_").replace("/", "_")


def clip_writer(audio_dir: Path | None) -> Callable[[str, str, np.ndarray], None] | None:
    """keep(system, name, audio): a report's clip as audio_dir/SYSTEM/NAME.wav (None without a folder)."""
    if audio_dir is None:
        return None

    def keep(system: str, name: str, audio: np.ndarray) -> None:
        import soundfile as sf

        folder = audio_dir / audio_folder(system)
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{name}.wav", audio, 16000)

    return keep


def reference_audio(reference: str | None) -> np.ndarray | None:
    """A prompt's reference voice as 16 kHz samples (a named voice or a file)."""
    from unisono.audio.io import load_audio
    from unisono.modes.tts import VOICES_DIR

    if reference is None:
        return None
    path = Path(reference) if Path(reference).suffix else VOICES_DIR / f"{reference}.flac"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in VOICES_DIR.glob("*.flac")))
        raise ValueError(f"reference {reference!r}: no such file or named voice (named voices: {known})")
    return load_audio(path, 16000)


def evaluate(system: TTSSystem, prompts: list[TTSPrompt], recognizers: list, similarity=None,
             use_dnsmos: bool = True, seed: int = 0, keep_audio: Callable[[str, str, np.ndarray], None] | None = None,
             progress: Callable[[], None] | None = None) -> SystemResult:
    """One system over the prompts. Prompt i is spoken with seed + i; a failure on one prompt is
    recorded as skipped with its reason, and the rest go on."""
    result = SystemResult(system.name)
    references = {p.reference: reference_audio(p.reference) for p in prompts if p.reference}
    for index, prompt in enumerate(prompts):
        if prompt.language not in system.languages:
            result.skipped.append({"id": prompt.id, "reason": f"{system.name} does not speak {prompt.language}"})
        else:
            try:
                rendering = system.speak(prompt, seed + index)
            except Exception as e:  # noqa: BLE001 - one prompt's failure is reported, the evaluation goes on
                result.skipped.append({"id": prompt.id, "reason": f"{type(e).__name__}: {e}"})
            else:
                result.items.append(score_clip(prompt, rendering, recognizers, similarity,
                                               references.get(prompt.reference), use_dnsmos))
                if keep_audio is not None:
                    keep_audio(system.name, prompt.id, rendering.audio)
        if progress is not None:
            progress()
    add_adherence(result, prompts)
    return result


def compare(baseline: SystemResult, other: SystemResult, recognizer: str, language: str) -> dict | None:
    """Error-rate and DNSMOS differences `other - baseline` over the prompts both spoke, with
    paired-bootstrap 95 % intervals."""
    mine = {i["id"]: i for i in other.spoken(language)}
    pairs = [(i, mine[i["id"]]) for i in baseline.spoken(language)
             if i["id"] in mine and recognizer in i["counts"] and recognizer in mine[i["id"]]["counts"]]
    if not pairs:
        return None
    a = [ErrorCounts.from_dict(x["counts"][recognizer]) for x, _ in pairs]
    b = [ErrorCounts.from_dict(y["counts"][recognizer]) for _, y in pairs]
    out = {"prompts": len(pairs), "error_rate": total(b).rate - total(a).rate, "error_rate_ci": difference_interval(a, b)}
    moss = [(x["dnsmos"]["ovrl"], y["dnsmos"]["ovrl"]) for x, y in pairs if x["dnsmos"] and y["dnsmos"]]
    if moss:
        base, new = (np.array(v) for v in zip(*moss))
        out["dnsmos"] = float(np.mean(new - base))
        out["dnsmos_ci"] = mean_difference_interval(base, new)
    return out
