"""ROVER: fuse several recognisers' transcripts of one clip by token-level voting.

Recogniser Output Voting Error Reduction (Fiscus, 1997). The hypotheses are aligned into a
*word transition network*: a sequence of **slots**, each holding one entry per system, the
token that system put there or `None` (the system has no token at that point, a null arc).
Each slot then votes; the winning token (if not `None`) is output.

    whisper      the  cat  sat  -
    sphinx       the  cat  sat  down
    whisper-b    a    cat  sat  -
                 ───  ───  ───  ────
    fused        the  cat  sat  (None wins 2:1)      disagreement = 2 slots of 4 = 0.5

Terms:
    slot            one column of the network: a tuple with one token (or None) per system
    disagreement    the fraction of slots whose entries are not all equal; 0 when every system
                    said the same thing, token for token
    priority        the order the systems are given in; it only breaks tied votes

The network is built in a *canonical* order (longest hypothesis first, then by content), not in
the order the systems are listed, so the fused text does not depend on that order except where
a vote is tied. Alignment is a dynamic programme against the network built so far:

    token vs slot      0 if any system already put that token in the slot, else 1 (substitution)
    skip a slot        0 if some system already has a null arc there, else 1 (deletion)
    new slot           1 (insertion: the systems aligned so far get a null arc)

Ties in the programme go to substitution, then deletion, then insertion, so the result is
deterministic. Input tokens should already be normalised (see `normalize_tokens`): the vote
compares strings exactly.

>>> r = rover([["the", "cat", "sat"], ["the", "cat", "sat", "down"], ["a", "cat", "sat"]])
>>> r.text, r.disagreement
('the cat sat', 0.5)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

Token = str
SlotEntries = tuple[Token | None, ...]


@dataclass
class RoverConfig:
    # Long-form clips whose systems disagree on more than this fraction of slots are discarded
    # (the report's threshold: 0.05, i.e. at most one slot in twenty).
    max_disagreement: float = 0.05
    # Chinese is voted per character: recognisers disagree on word boundaries, not on characters.
    char_level_languages: tuple[str, ...] = ("zh",)


@dataclass
class RoverResult:
    tokens: list[Token]  # the fused token sequence
    slots: list[SlotEntries]  # the network; entries in the systems' given order
    votes: list[int] = field(default_factory=list)  # votes for the winner of each slot

    @property
    def n_systems(self) -> int:
        return len(self.slots[0]) if self.slots else 0

    @property
    def disagreement(self) -> float:
        """Fraction of slots where the systems are not unanimous (0.0 for an empty network)."""
        if not self.slots:
            return 0.0
        return sum(len(set(s)) > 1 for s in self.slots) / len(self.slots)

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def joined(self, separator: str = " ") -> str:
        return separator.join(self.tokens)


def _canonical_order(hyps: Sequence[Sequence[Token]]) -> list[int]:
    # Longest first: it makes the best pivot (fewest insertions); content breaks length ties so
    # that two listings of the same hypotheses build the same network.
    return sorted(range(len(hyps)), key=lambda i: (-len(hyps[i]), tuple(hyps[i])))


def _align_into(network: list[list[Token | None]], hyp: Sequence[Token], column: int, n_systems: int) -> list[list[Token | None]]:
    """Align `hyp` against `network` (slots with `column` earlier entries) and add it as a column."""
    n_slots, n_tok = len(network), len(hyp)
    # costs[i][j]: best cost of aligning the first i slots with the first j tokens
    INF = float("inf")
    costs = [[INF] * (n_tok + 1) for _ in range(n_slots + 1)]
    moves = [[""] * (n_tok + 1) for _ in range(n_slots + 1)]
    costs[0][0] = 0
    for i in range(n_slots + 1):
        for j in range(n_tok + 1):
            if i == 0 and j == 0:
                continue
            best, move = INF, ""
            if i > 0 and j > 0:  # token j-1 into slot i-1
                c = costs[i - 1][j - 1] + (0 if hyp[j - 1] in network[i - 1][:column] else 1)
                best, move = c, "sub"
            if i > 0:  # slot i-1 gets a null arc from this system
                c = costs[i - 1][j] + (0 if None in network[i - 1][:column] else 1)
                if c < best:
                    best, move = c, "del"
            if j > 0:  # token j-1 opens a new slot
                c = costs[i][j - 1] + 1
                if c < best:
                    best, move = c, "ins"
            costs[i][j], moves[i][j] = best, move
    out: list[list[Token | None]] = []
    i, j = n_slots, n_tok
    while i > 0 or j > 0:
        move = moves[i][j]
        if move == "sub":
            slot = list(network[i - 1])
            slot[column] = hyp[j - 1]
            i, j = i - 1, j - 1
        elif move == "del":
            slot = list(network[i - 1])
            slot[column] = None
            i -= 1
        else:
            slot = [None] * n_systems
            slot[column] = hyp[j - 1]
            j -= 1
        out.append(slot)
    out.reverse()
    return out


def align(hyps: Sequence[Sequence[Token]]) -> list[SlotEntries]:
    """The word transition network of `hyps`: slots with one entry per system, in the given order."""
    if not hyps:
        raise ValueError("ROVER needs at least one hypothesis")
    order = _canonical_order(hyps)
    n = len(hyps)
    network: list[list[Token | None]] = []
    for column, system in enumerate(order):
        if column == 0:
            network = [[tok] + [None] * (n - 1) for tok in hyps[system]]
        else:
            network = _align_into(network, hyps[system], column, n)
    # columns are in canonical order; put them back in the systems' given order
    position = {system: column for column, system in enumerate(order)}
    return [tuple(slot[position[s]] for s in range(n)) for slot in network]


def vote(slots: Sequence[SlotEntries], weights: Sequence[float] | None = None) -> tuple[list[Token], list[int]]:
    """The winner of each slot (None winners dropped) and its vote count.

    Each system's entry counts `weights[system]` (default 1). A tie goes to the entry of the
    system listed first among those tied.
    """
    tokens: list[Token] = []
    counts: list[int] = []
    for slot in slots:
        w = weights or [1.0] * len(slot)
        score: Counter = Counter()
        for entry, weight in zip(slot, w):
            score[entry] += weight
        top = max(score.values())
        winner = next(e for e in slot if score[e] == top)  # first listed among the tied
        counts.append(sum(1 for e in slot if e == winner))
        if winner is not None:
            tokens.append(winner)
    return tokens, counts


def rover(hyps: Sequence[Sequence[Token]], weights: Sequence[float] | None = None) -> RoverResult:
    """Fuse token sequences (one per system, normalised) by alignment and voting."""
    if weights is not None and len(weights) != len(hyps):
        raise ValueError(f"{len(weights)} weights for {len(hyps)} hypotheses")
    slots = align(hyps)
    tokens, counts = vote(slots, weights)
    return RoverResult(tokens=tokens, slots=slots, votes=counts)


def normalize_tokens(text: str, language: str, normalizer: Callable[[str], str] | None = None,
                     config: RoverConfig | None = None) -> list[Token]:
    """Tokens to vote on: the normalised text split into words (or characters for Chinese)."""
    config = config or RoverConfig()
    norm = normalizer(text) if normalizer else text.lower()
    if language in config.char_level_languages:
        return [c for c in norm if not c.isspace()]
    return norm.split()


__all__ = ["RoverConfig", "RoverResult", "align", "normalize_tokens", "rover", "vote"]
