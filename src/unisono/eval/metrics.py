"""Error counts (substitutions, deletions, insertions) from a minimum-edit alignment, via jiwer.

Corpus error rates are sums of counts over utterances divided by the summed reference length
(the usual definition), never a mean of per-utterance rates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from unisono.eval.normalize import Unit


@dataclass(frozen=True)
class ErrorCounts:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def reference_length(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """(S + D + I) / N; an empty reference scores 0 if the hypothesis is empty too, else inf."""
        n = self.reference_length
        if n == 0:
            return 0.0 if self.insertions == 0 else float("inf")
        return self.errors / n

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.hits + other.hits,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> "ErrorCounts":
        return cls(**d)


def count_errors(reference: str, hypothesis: str, unit: Unit) -> ErrorCounts:
    """Edit counts between two already-normalised strings, in words (split on spaces) or characters.

    In characters, spaces count like any other character: the character conventions of
    `unisono.eval.normalize` remove them first.
    """
    import jiwer

    if unit == "word":
        out = jiwer.process_words(reference, hypothesis)
    elif unit == "char":
        out = jiwer.process_characters(reference, hypothesis)
    else:
        raise ValueError(f"unit must be 'word' or 'char', not {unit!r}")
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits)


def total(counts: list[ErrorCounts]) -> ErrorCounts:
    out = ErrorCounts()
    for c in counts:
        out = out + c
    return out
