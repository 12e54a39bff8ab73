"""Preference data for TTS from rollouts: sample candidates, score them with measured rewards, pair them.

    prompt (text, instruction, reference voice)
      ─► N candidates from the current model (TTS sampling, seed = base seed + candidate index)
      ─► rewards, each measured on the audio (`unisono.eval.speech_scores`):
           intelligibility  -WER (English) / -CER (Mandarin) of a recogniser against the text, capped at 2
           similarity       GE2E cosine to the reference voice (the default voice when none is named)
           dnsmos           DNSMOS P.835 overall (1-5)
           adherence        for an instructed prompt, how far the candidate's rate / F0 moved the asked
                            way from the median of the prompt's candidates (log ratio; semitones / 2)
           length           -1 for a candidate cut at its length guard (a runaway), and minus how far
                            its duration is beyond 2x off the text's natural duration (log scale)
      ─► total = the weighted sum; the best and the worst candidate of a prompt are a pair when their
         totals differ by at least `margin` (one pair a prompt: no prompt weighs more than another)

RUN/rollouts.jsonl holds a line per prompt (every candidate's seed, tokens and rewards) and is
appended prompt by prompt, so a killed run resumes where it stopped (a torn last line is dropped);
RUN/pairs.jsonl is rebuilt from it at the end, so pairs are never duplicated. A pair line holds the
prompt, both token sequences, every reward of both and where they came from.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from unisono.eval.speech_scores import speech_units
from unisono.modes.tts import NATURAL_RATE

ROLLOUTS_FILE = "rollouts.jsonl"
PAIRS_FILE = "pairs.jsonl"


@dataclass
class RewardWeights:
    intelligibility: float = 1.0
    similarity: float = 0.5
    dnsmos: float = 0.25
    adherence: float = 0.5
    length: float = 1.0


@dataclass
class RolloutConfig:
    candidates: int = 4
    temperature: float = 0.9
    top_k: int = 25
    top_p: float = 0.8
    seed: int = 0
    margin: float = 0.1  # the least difference of totals that makes a pair
    dnsmos: bool = True
    weights: RewardWeights = field(default_factory=RewardWeights)

    def __post_init__(self) -> None:
        if self.candidates < 2:
            raise ValueError(f"a pair needs at least 2 candidates, got {self.candidates}")


INSTRUCTIONS = (("rate", "slow", "Speak slowly."), ("rate", "fast", "Speak quickly."),
                ("pitch", "low", "Speak with a low voice."), ("pitch", "high", "Speak with a high voice."))


def make_prompts(rows: list[dict], count: int, seed: int = 0, instructed: float = 0.25, exclude: set[str] = frozenset(),
                 languages: tuple[str, ...] = ("en",), min_words: int = 4, max_words: int = 20) -> list[dict]:
    """One-sentence TTS prompts drawn from text rows ({"text", "language"}: a manifest or a sentence
    list), none of whose texts is in `exclude`. A share `instructed` of them also comes as an
    instructed twin (an asked rate or pitch, paired with the plain prompt)."""
    from unisono.modes.tts import split_sentences

    rng = np.random.default_rng(seed)
    seen, pool = set(exclude), []
    for row in rows:
        text, language = str(row.get("text") or "").strip(), row.get("language", "en")
        size = len(text.split()) if language == "en" else len(text) // 2
        if language in languages and text not in seen and min_words <= size <= max_words and len(split_sentences(text)) == 1:
            seen.add(text)
            pool.append((text, language))
    if len(pool) < count:
        raise ValueError(f"only {len(pool)} usable sentences for {count} prompts")
    prompts = []
    for k, i in enumerate(rng.choice(len(pool), size=count, replace=False)):
        text, language = pool[int(i)]
        prompts.append({"id": f"{language}-{k:04d}", "text": text, "language": language})
        if rng.random() < instructed:
            key, value, words = INSTRUCTIONS[int(rng.integers(len(INSTRUCTIONS)))]
            prompts.append({"id": f"{language}-{k:04d}-{value}", "text": text, "language": language, "instruct": words,
                            "asked": {key: value}, "pair_of": f"{language}-{k:04d}"})
    return prompts


def measured_rewards(prompt, audio: np.ndarray, ended: bool, recognizer, similarity, reference: np.ndarray | None,
                     use_dnsmos: bool) -> dict:
    """The rewards a candidate has on its own (adherence needs the prompt's other candidates), from
    the measures `unisono eval tts` takes of a clip."""
    from unisono.eval.metrics import ErrorCounts
    from unisono.eval.tts import Rendering, score_clip

    item = score_clip(prompt, Rendering(audio, 0.0, 0.0, ended), [recognizer], similarity, reference, use_dnsmos)
    error_rate = ErrorCounts.from_dict(item["counts"][recognizer.name]).rate
    expected = speech_units(prompt.text, prompt.language) / NATURAL_RATE[prompt.language]
    off = abs(math.log(max(item["delivery"]["speech_s"], 0.05) / max(expected, 0.05)))
    return {
        "hypothesis": item["hypotheses"][recognizer.name],
        "error_rate": error_rate,
        "intelligibility": -min(error_rate, 2.0),
        "similarity": item["similarity"] or 0.0,
        "dnsmos": item["dnsmos"]["ovrl"] if item["dnsmos"] else 0.0,
        "delivery": item["delivery"],
        "ended": ended,
        "length": (0.0 if ended else -1.0) - max(0.0, off - math.log(2)),
    }


def add_adherence(prompt, rewards: list[dict]) -> None:
    """Adherence of each candidate relative to the median of its prompt's candidates."""
    for r in rewards:
        r["adherence"] = 0.0
    for key, value in (prompt.asked or {}).items():
        if key == "rate":
            rates = [r["delivery"]["rate"] for r in rewards]
            center = statistics.median(rates)
            for r, rate in zip(rewards, rates):
                moved = math.log(max(rate, 1e-3) / max(center, 1e-3))
                r["adherence"] += -moved if value == "slow" else moved
        else:
            f0s = [r["delivery"]["f0_median_hz"] for r in rewards]
            known = [f for f in f0s if f]
            if not known:
                continue
            center = statistics.median(known)
            for r, f0 in zip(rewards, f0s):
                moved = 12 * math.log2(f0 / center) / 2 if f0 else -1.0  # nothing voiced: the worst
                r["adherence"] += -moved if value == "low" else moved


def total_reward(rewards: dict, weights: RewardWeights) -> float:
    return sum(getattr(weights, k) * rewards[k] for k in ("intelligibility", "similarity", "dnsmos", "adherence", "length"))


def pair_of(row: dict, margin: float) -> dict | None:
    """The best and the worst candidate of a prompt's rollouts, if their totals differ by `margin`."""
    ranked = sorted(row["candidates"], key=lambda c: (-c["total"], c["seed"]))
    best, worst = ranked[0], ranked[-1]
    if best["total"] - worst["total"] < margin:
        return None
    return {"id": row["prompt"]["id"], "prompt": row["prompt"], "chosen": best["tokens"], "rejected": worst["tokens"],
            "chosen_rewards": best["rewards"], "rejected_rewards": worst["rewards"],
            "margin": round(best["total"] - worst["total"], 4), "seeds": [best["seed"], worst["seed"]],
            "model": row["model"], "scorer": row.get("recognizer") or row.get("judge")}


def read_rollouts(path: Path) -> list[dict]:
    """The complete lines of a rollouts file; a torn last line (a killed run) is cut off the file."""
    if not path.is_file():
        return []
    rows, good_bytes = [], 0
    with open(path, "rb") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good_bytes += len(line)
    if good_bytes < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return rows


def write_pairs(run: Path, margin: float) -> list[dict]:
    pairs = [p for p in (pair_of(row, margin) for row in read_rollouts(run / ROLLOUTS_FILE)) if p is not None]
    tmp = run / (PAIRS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    os.replace(tmp, run / PAIRS_FILE)
    return pairs


def rollouts(model, model_name: str, prompts: list, run: Path, config: RolloutConfig, recognizers: dict, similarity,
             progress: Callable[[], None] | None = None) -> list[dict]:
    """Roll out every prompt not yet in RUN/rollouts.jsonl; returns the pairs of all of them.
    `recognizers`: language -> recogniser."""
    from unisono.eval.tts import reference_audio
    from unisono.modes.tts import DEFAULT_VOICE, TTSOptions, max_speech_tokens, speak, split_sentences

    run.mkdir(parents=True, exist_ok=True)
    path = run / ROLLOUTS_FILE
    done = {row["prompt"]["id"] for row in read_rollouts(path)}
    with open(path, "a", encoding="utf-8") as out:
        for index, prompt in enumerate(prompts):
            if prompt.id in done:
                if progress:
                    progress()
                continue
            sentences = split_sentences(prompt.text)
            if len(sentences) != 1:
                raise ValueError(f"prompt {prompt.id}: a rollout prompt is one sentence (this one is {len(sentences)})")
            if prompt.language not in recognizers:
                raise ValueError(f"prompt {prompt.id}: no recogniser for {prompt.language}")
            reference = reference_audio(prompt.reference or DEFAULT_VOICE)
            candidates = []
            for k in range(config.candidates):
                seed = config.seed + index * 1000 + k
                options = TTSOptions(instruct=prompt.instruct, seed=seed, temperature=config.temperature,
                                     top_k=config.top_k, top_p=config.top_p)
                speech = speak(model, prompt.text, voice=prompt.reference, options=options)
                tokens = speech.tokens[0]
                ended = len(tokens) < max_speech_tokens(sentences[0])
                rewards = measured_rewards(prompt, speech.audio, ended, recognizers[prompt.language], similarity,
                                           reference, config.dnsmos)
                candidates.append({"seed": seed, "tokens": tokens, "rewards": rewards})
            add_adherence(prompt, [c["rewards"] for c in candidates])
            for c in candidates:
                c["rewards"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in c["rewards"].items()}
                c["total"] = round(total_reward(c["rewards"], config.weights), 4)
            row = {"prompt": asdict(prompt), "model": model_name, "recognizer": recognizers[prompt.language].name,
                   "config": asdict(config), "candidates": candidates}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            if progress:
                progress()
    return write_pairs(run, config.margin)
