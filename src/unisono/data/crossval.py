"""Cross-validate transcripts from independent recognisers and grade each clip into a tier.

Two recognisers that make different errors rarely make the same one: where they agree, the
transcript is very likely right. Per clip:

    wer          word edit distance between the two normalised transcripts, over the words of
                 the first (the primary system's transcript plays the reference)
    cer          character edit distance (spaces removed) over the longer transcript: it forgives
                 word-boundary differences ("g m e f" vs "gmef") and works for Chinese
    speech_rate  words per second of speech (characters per second for Chinese) of the primary
                 transcript, against a plausible range for the language

Tiers, best first (`TierConfig`): a clip lands in the first tier whose every bar it meets.

    gold     wer <= 0.05, cer <= 0.05, quality >= 0.5, one speaker, plausible rate
    silver   wer <= 0.20, cer <= 0.15, quality >= 0.3, plausible rate
    bronze   wer <= 0.40, cer <= 0.30
    (none)   rejected: the recognisers disagree too much to trust either

A language with fewer than two recognisers cannot be cross-validated: its clips are kept as
`unverified`, never promoted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Callable

UNVERIFIED = "unverified"

# Whisper's English normaliser writes number words as digits ("three nine" -> "39"): one token
# for several spoken words, so number-heavy speech reads slow; the lower rate bound allows for it.


@dataclass(frozen=True)
class Tier:
    name: str
    max_wer: float
    max_cer: float
    min_quality: float = 0.0
    single_speaker: bool = False
    plausible_rate: bool = False


@dataclass
class TierConfig:
    tiers: tuple[Tier, ...] = (
        Tier("gold", max_wer=0.05, max_cer=0.05, min_quality=0.5, single_speaker=True, plausible_rate=True),
        Tier("silver", max_wer=0.20, max_cer=0.15, min_quality=0.3, plausible_rate=True),
        Tier("bronze", max_wer=0.40, max_cer=0.30),
    )
    # Plausible speech rates (units per second of speech): conversational English is 2-3 words/s,
    # Mandarin 3-5 characters/s; the ranges leave room for slow and fast speakers.
    rate_range: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"en": (0.5, 6.0), "zh": (1.0, 9.0)}
    )


@dataclass
class Agreement:
    wer: float
    cer: float
    speech_rate: float  # units (words, or characters for zh) per second of speech
    rate_ok: bool
    systems: tuple[str, str]

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


@lru_cache(maxsize=4)
def normalizer(language: str) -> Callable[[str], str]:
    """The scoring normaliser of a language (Whisper's English one; Chinese: t2s, no punctuation)."""
    from unisono.eval.normalize import make_scoring

    return make_scoring("zh" if language == "zh" else "en").normalize


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edits over the reference's words (jiwer); 0 when both are empty, 1 when only the reference is."""
    import jiwer

    if not reference.split():
        return 0.0 if not hypothesis.split() else 1.0
    return float(jiwer.wer(reference, hypothesis))


def char_distance(a: str, b: str) -> float:
    """Levenshtein distance of the two strings without spaces, over the longer one's length."""
    from rapidfuzz.distance import Levenshtein

    a, b = a.replace(" ", ""), b.replace(" ", "")
    if not a and not b:
        return 0.0
    return Levenshtein.distance(a, b) / max(len(a), len(b))


def units(text: str, language: str) -> int:
    """Words, or characters for Chinese (after normalisation)."""
    return len(text.replace(" ", "")) if language == "zh" else len(text.split())


def agreement(primary: str, secondary: str, language: str, speech_s: float, systems: tuple[str, str],
              config: TierConfig | None = None) -> Agreement:
    config = config or TierConfig()
    norm = normalizer(language)
    a, b = norm(primary), norm(secondary)
    rate = units(a, language) / speech_s if speech_s > 0 else 0.0
    lo, hi = config.rate_range.get(language, (0.0, float("inf")))
    return Agreement(
        wer=word_error_rate(a, b) if language != "zh" else char_distance(a, b),
        cer=char_distance(a, b),
        speech_rate=rate,
        rate_ok=lo <= rate <= hi,
        systems=systems,
    )


def assign_tier(agree: Agreement | None, quality: float, speakers: int, config: TierConfig | None = None) -> str | None:
    """The best tier the clip qualifies for; `UNVERIFIED` without an agreement; None: reject."""
    config = config or TierConfig()
    if agree is None:
        return UNVERIFIED
    for t in config.tiers:
        if agree.wer > t.max_wer or agree.cer > t.max_cer or quality < t.min_quality:
            continue
        if t.single_speaker and speakers > 1:
            continue
        if t.plausible_rate and not agree.rate_ok:
            continue
        return t.name
    return None


def rejection_reason(agree: Agreement, config: TierConfig | None = None) -> str:
    config = config or TierConfig()
    worst = config.tiers[-1]
    return (f"recognisers disagree ({agree.systems[0]} vs {agree.systems[1]}): WER {agree.wer:.2f}, "
            f"CER {agree.cer:.2f}; tier {worst.name!r} needs WER <= {worst.max_wer} and CER <= {worst.max_cer}")


__all__ = ["Agreement", "Tier", "TierConfig", "UNVERIFIED", "agreement", "assign_tier", "char_distance",
           "normalizer", "rejection_reason", "units", "word_error_rate"]
