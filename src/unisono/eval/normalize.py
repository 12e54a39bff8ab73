"""Text normalisation before scoring, so that only recognition errors count, not spelling style.

Three conventions (SPEC §4), each a callable `str -> str` plus the unit it is scored in:

- ``en``  (WER): Whisper's English normaliser (`whisper-normalizer`): lower case, punctuation
  removed, contractions expanded ("won't" -> "will not"), British -> American spelling, number
  words -> digits ("fourteen sixty-five" -> "1465"), full-width characters folded.
- ``zh``  (CER): NFKC (full-width -> half-width), traditional -> simplified (OpenCC ``t2s``), then
  every punctuation mark, symbol and space removed; Latin letters lower-cased. No inverse text
  normalisation: "2015年" and "二零一五年" stay different (the AISHELL references hold no digits).
- ``an4`` (CER): AN4 is spelled letters and digit strings ("G M E F THREE NINE"): a recogniser that
  writes "GMEF39" is right, yet scores 4 word errors of 6. So: the English normaliser, then the
  number words it leaves alone ("one" on its own) -> digits, then everything but a-z and 0-9 removed,
  on both sides, and the strings compared character by character. Note that the English normaliser
  reads a lone "O"/"oh" as zero; it does so on both sides, so the letter O and the digit 0 are one
  symbol here, which is how AN4's speakers use them anyway.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Literal

Unit = Literal["word", "char"]

# Number words Whisper's normaliser keeps as words. It leaves a lone "one" (as in "one of them")
# and turns a lone digit "1" into "one"; on AN4 every number word is a digit.
_LEFTOVER_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
} | {"twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90"}


class EnglishNormalizer:
    """Whisper's English normaliser (the `whisper-normalizer` package)."""

    def __init__(self) -> None:
        from whisper_normalizer.english import EnglishTextNormalizer

        self._whisper = EnglishTextNormalizer()

    def __call__(self, text: str) -> str:
        return self._whisper(text)


class AN4Normalizer:
    """English normaliser, number words -> digits, keep only a-z0-9 (scored as characters)."""

    def __init__(self) -> None:
        self._english = EnglishNormalizer()

    def __call__(self, text: str) -> str:
        words = self._english(text).split()
        words = [_LEFTOVER_NUMBER_WORDS.get(w, w) for w in words]
        return re.sub(r"[^a-z0-9]", "", "".join(words))


class ChineseNormalizer:
    """NFKC, traditional -> simplified, punctuation/symbols/spaces removed (scored as characters)."""

    def __init__(self) -> None:
        from opencc import OpenCC

        self._t2s = OpenCC("t2s")

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text)
        text = self._t2s.convert(text)
        # P*: punctuation, S*: symbols, Z*: separators; whitespace and control characters too
        kept = (c for c in text if unicodedata.category(c)[0] not in "PSZC" and not c.isspace())
        return "".join(kept).lower()


@dataclass(frozen=True)
class Scoring:
    """How a set is scored: the normaliser applied to both sides, and the unit of the error rate."""

    name: str  # "en", "zh" or "an4"
    unit: Unit
    normalize: Callable[[str], str]

    @property
    def metric(self) -> str:
        return "WER" if self.unit == "word" else "CER"


SCORINGS: dict[str, tuple[Unit, Callable[[], Callable[[str], str]]]] = {
    "en": ("word", EnglishNormalizer),
    "zh": ("char", ChineseNormalizer),
    "an4": ("char", AN4Normalizer),
}


def make_scoring(name: str) -> Scoring:
    if name not in SCORINGS:
        raise ValueError(f"unknown scoring {name!r}; choose one of {', '.join(SCORINGS)}")
    unit, factory = SCORINGS[name]
    return Scoring(name, unit, factory())


def default_scoring_name(set_name: str, language: str | None) -> str:
    """The convention for a set: AN4 sets by name, Chinese by language, English otherwise."""
    if set_name.lower().startswith("an4"):
        return "an4"
    if language and language.lower().startswith(("zh", "cmn", "yue")):
        return "zh"
    return "en"
