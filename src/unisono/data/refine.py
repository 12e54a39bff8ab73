"""Text refiners for the long-form path: fused (normalised) tokens back to readable text.

ROVER votes on normalised tokens: lower case, no punctuation. A refiner turns the segments of
one recording back into written text:

    rules            (default) inverse text normalisation ("twenty five dollars" -> "$25", with
                     Whisper's English number normaliser), cross-segment terminology (a word's
                     most frequent written form among the recognisers' raw outputs anywhere in
                     the recording is used everywhere: "exhibition" -> "Exhibition" in every
                     segment if the recognisers wrote it so), capitalised sentence starts and "I",
                     final punctuation ("?" after a question opener, "." otherwise; "。" in Chinese)
    openai:URL       any OpenAI-compatible POST /v1/chat/completions; it sees the previous
                     segments as context. A failed call falls back to the rules for that segment.

Both take all segments of a recording at once, so terminology stays consistent across them.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Protocol, Sequence

from unisono.peers.openai_client import ServerError

QUESTION_OPENERS = frozenset(
    "who what when where why how which whose whom is are am was were do does did can could will would "
    "shall should may might must have has had isn't aren't don't doesn't didn't can't won't".split()
)


class Refiner(Protocol):
    name: str

    def refine(self, segments: Sequence[str], language: str, raw: Sequence[Sequence[str]] = ()) -> list[str]:
        """`segments`: fused normalised texts; `raw`: each segment's raw transcripts (any systems)."""
        ...


def terminology(raw: Sequence[Sequence[str]]) -> dict[str, str]:
    """lower-case word -> its most frequent written form across all raw transcripts.

    Ties go to the capitalised form (a recogniser that capitalises a word mid-sentence knows a
    name). Sentence-initial words are not counted: their capital says nothing.
    """
    forms: dict[str, Counter] = defaultdict(Counter)
    for texts in raw:
        for text in texts:
            for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
                words = re.findall(r"[\w'’-]+", sentence)
                for w in words[1:]:
                    forms[w.lower()][w] += 1
    out = {}
    for key, counts in forms.items():
        best = max(counts.items(), key=lambda kv: (kv[1], kv[0] != kv[0].lower()))[0]
        if best != key:
            out[key] = best
    return out


@dataclass
class RuleRefinerConfig:
    inverse_normalize: bool = True
    punctuate: bool = True
    terminology: bool = True


class RuleRefiner:
    name = "rules"

    def __init__(self, config: RuleRefinerConfig | None = None):
        self.config = config or RuleRefinerConfig()
        self._numbers = None

    def _itn(self, text: str) -> str:
        if self._numbers is None:
            from whisper_normalizer.english import EnglishNumberNormalizer

            self._numbers = EnglishNumberNormalizer()
        return re.sub(r"\s+", " ", self._numbers(text)).strip()

    def refine_one(self, text: str, language: str, terms: dict[str, str]) -> str:
        text = text.strip()
        if not text:
            return text
        if language == "zh":
            return text + "。" if self.config.punctuate and text[-1] not in "。！？" else text
        if self.config.inverse_normalize:
            text = self._itn(text)
        words = text.split()
        if self.config.terminology:
            words = [terms.get(w, w) for w in words]
        if self.config.punctuate:
            words = ["I" if w == "i" else re.sub(r"^i'", "I'", w) for w in words]
            words[0] = words[0][:1].upper() + words[0][1:]
            end = "?" if words[0].lower() in QUESTION_OPENERS else "."
            if words[-1][-1] not in ".?!":
                words[-1] += end
        return " ".join(words)

    def refine(self, segments: Sequence[str], language: str, raw: Sequence[Sequence[str]] = ()) -> list[str]:
        terms = terminology(raw) if self.config.terminology else {}
        return [self.refine_one(s, language, terms) for s in segments]


@dataclass
class ChatRefinerConfig:
    url: str  # API base (".../v1") or the full ".../chat/completions" address
    model: str = "gpt-4o-mini"
    key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    context_segments: int = 3  # previous refined segments shown for terminology and flow


SYSTEM_PROMPT = (
    "You restore written form to speech-recogniser output. Add punctuation and capitalisation, write "
    "numbers, dates and symbols as digits where a transcript would, and keep names spelled as in the "
    "context. Do not add, drop or reorder words. Answer with the refined segment only."
)


class ChatRefiner:
    """An OpenAI-compatible chat model as refiner; the rules take over for any failed call."""

    name = "chat"

    def __init__(self, config: ChatRefinerConfig):
        from unisono.peers.openai_client import OpenAIClient, ServerConfig

        self.config = config
        self.client = OpenAIClient(ServerConfig(url=config.url, key_env=config.key_env, timeout_s=config.timeout_s))
        self.fallback = RuleRefiner()
        self.failures: list[str] = []  # why calls failed, for the run's log

    def _ask(self, text: str, language: str, context: Sequence[str]) -> str:
        user = (f"Language: {language}\nPrevious segments:\n" + "\n".join(context) + f"\n\nSegment:\n{text}")
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
        return self.client.chat(messages, model=self.config.model, temperature=0.0)

    def refine(self, segments: Sequence[str], language: str, raw: Sequence[Sequence[str]] = ()) -> list[str]:
        terms = terminology(raw)
        out: list[str] = []
        for text in segments:
            if not text.strip():
                out.append(text)
                continue
            try:
                refined = self._ask(text, language, out[-self.config.context_segments:])
            except ServerError as e:
                self.failures.append(str(e))
                refined = ""
            out.append(refined or self.fallback.refine_one(text, language, terms))
        return out


def build_refiner(spec: str) -> Refiner:
    """"rules", or "openai:URL[:model=NAME]" for a chat endpoint."""
    if spec == "rules":
        return RuleRefiner()
    kind, _, rest = spec.partition(":")
    if kind == "openai" and rest:
        url, _, model = rest.partition(":model=")
        return ChatRefiner(ChatRefinerConfig(url=url, **({"model": model} if model else {})))
    raise ValueError(f"unknown refiner {spec!r}: use 'rules' or 'openai:URL[:model=NAME]'")


__all__ = ["ChatRefiner", "ChatRefinerConfig", "Refiner", "RuleRefiner", "RuleRefinerConfig", "build_refiner",
           "terminology"]
