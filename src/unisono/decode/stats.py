"""Counters of a decoding run: decoder passes, tokens, and MTP acceptance by draft position."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DecodeStats:
    """Per-sequence counts, summed over the sequences of a run.

    - `passes`: decoder forward passes that produced tokens for a sequence, prefill included
      (plain greedy decoding makes one token per pass).
    - `tokens`: tokens produced, the closing `<|end|>` included.
    - `accepted_hist[k]`: verification passes that accepted k draft tokens (k = 0..n_branches).
    - `position_proposed[i]` / `position_accepted[i]`: drafts proposed / accepted at draft
      position i+1 (a draft at position i+1 is only judged if the ones before it were accepted).
    """

    n_branches: int = 0
    passes: int = 0
    tokens: int = 0
    forward_calls: int = 0  # batched decoder calls (one call serves every row of a batch)
    accepted_hist: list[int] = field(default_factory=list)
    position_proposed: list[int] = field(default_factory=list)
    position_accepted: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = self.n_branches
        self.accepted_hist = self.accepted_hist or [0] * (k + 1)
        self.position_proposed = self.position_proposed or [0] * k
        self.position_accepted = self.position_accepted or [0] * k

    @property
    def tokens_per_pass(self) -> float:
        return self.tokens / self.passes if self.passes else 0.0

    @property
    def mean_accepted(self) -> float:
        n = sum(self.accepted_hist)
        return sum(k * c for k, c in enumerate(self.accepted_hist)) / n if n else 0.0

    @property
    def acceptance_rate(self) -> list[float]:
        """P(draft at position i accepted | drafts before it accepted), i = 1..n_branches."""
        return [a / p if p else 0.0 for a, p in zip(self.position_accepted, self.position_proposed)]

    def record_verification(self, n_drafts: int, n_accepted: int) -> None:
        self.accepted_hist[n_accepted] += 1
        for i in range(min(n_accepted + 1, n_drafts)):
            self.position_proposed[i] += 1
        for i in range(n_accepted):
            self.position_accepted[i] += 1

    def merge(self, other: "DecodeStats") -> "DecodeStats":
        if other.n_branches != self.n_branches:
            if self.passes == 0:
                return DecodeStats(**other.to_dict())
            if other.passes == 0:
                return self
            raise ValueError(f"cannot merge stats of {self.n_branches} and {other.n_branches} branches")
        return DecodeStats(
            n_branches=self.n_branches,
            passes=self.passes + other.passes,
            tokens=self.tokens + other.tokens,
            forward_calls=self.forward_calls + other.forward_calls,
            accepted_hist=[a + b for a, b in zip(self.accepted_hist, other.accepted_hist)],
            position_proposed=[a + b for a, b in zip(self.position_proposed, other.position_proposed)],
            position_accepted=[a + b for a, b in zip(self.position_accepted, other.position_accepted)],
        )

    def to_dict(self) -> dict:
        return {
            "n_branches": self.n_branches,
            "passes": self.passes,
            "tokens": self.tokens,
            "forward_calls": self.forward_calls,
            "accepted_hist": list(self.accepted_hist),
            "position_proposed": list(self.position_proposed),
            "position_accepted": list(self.position_accepted),
        }

    def summary(self) -> dict:
        return {
            **self.to_dict(),
            "tokens_per_pass": round(self.tokens_per_pass, 3),
            "mean_accepted": round(self.mean_accepted, 3),
            "acceptance_rate": [round(r, 3) for r in self.acceptance_rate],
        }
