"""Error counts (substitutions, deletions, insertions) from a minimum-edit alignment, via jiwer.

Corpus error rates are sums of counts over utterances divided by the summed reference length
(the usual definition), never a mean of per-utterance rates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

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


def difference_interval(
    baseline: list[ErrorCounts],
    system: list[ErrorCounts],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Confidence interval of the corpus error-rate difference `system - baseline`, where both
    systems scored the same utterances (same order): a paired bootstrap over utterances (Bisani &
    Ney, 2004), percentile method. A set of 40-60 clips moves by several points from the clips
    alone; this says how many. The seed is fixed so that a report repeats itself. Each system's
    rate is over its own reference words: the same for a transcript, not for a spoken reply, whose
    reference is the reply each system wrote."""
    from scipy.stats import bootstrap

    if len(baseline) != len(system):
        raise ValueError(f"paired counts differ in length: {len(baseline)} and {len(system)}")
    if len(baseline) < 2:
        return float("nan"), float("nan")
    base = np.array([c.errors for c in baseline], dtype=np.float64)
    new = np.array([c.errors for c in system], dtype=np.float64)
    base_words = np.array([c.reference_length for c in baseline], dtype=np.float64)
    new_words = np.array([c.reference_length for c in system], dtype=np.float64)
    if base_words.sum() == 0 or new_words.sum() == 0:
        return float("nan"), float("nan")
    if np.array_equal(base, new) and np.array_equal(base_words, new_words):  # every resample gives 0 (scipy would warn)
        return 0.0, 0.0

    def rate_difference(b, n, wb, wn, axis=-1):
        return n.sum(axis=axis) / np.maximum(wn.sum(axis=axis), 1.0) - b.sum(axis=axis) / np.maximum(wb.sum(axis=axis), 1.0)

    res = bootstrap((base, new, base_words, new_words), rate_difference, paired=True, vectorized=True, n_resamples=resamples,
                    confidence_level=confidence, method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_difference_interval(baseline, system, confidence: float = 0.95, resamples: int = 2000,
                             seed: int = 0) -> tuple[float, float]:
    """Confidence interval of the mean of `system - baseline` over paired items (a score per item:
    DNSMOS, similarity, a reward), by the same paired bootstrap as `difference_interval`."""
    from scipy.stats import bootstrap

    base, new = np.asarray(baseline, dtype=np.float64), np.asarray(system, dtype=np.float64)
    if base.shape != new.shape:
        raise ValueError(f"paired scores differ in shape: {base.shape} and {new.shape}")
    if len(base) < 2:
        return float("nan"), float("nan")
    differences = new - base
    if np.all(differences == differences[0]):  # a degenerate distribution: every resample gives the same mean
        return float(differences[0]), float(differences[0])
    res = bootstrap((differences,), np.mean, vectorized=True, n_resamples=resamples, confidence_level=confidence,
                    method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def format_difference(difference: float, bounds: tuple[float, float]) -> str:
    """'+d (+a to +b)' in points; the interval is left out where a set was too small to resample."""
    low, high = bounds
    return f"{100 * difference:+.1f}" + ("" if np.isnan(low) else f" ({100 * low:+.1f} to {100 * high:+.1f})")
