"""Exact streaming of sequence models whose receptive field is bounded.

If output step t of `fn` depends only on inputs t - left .. t + right, then running `fn` on the
window [t0 - left, t1 + right) and keeping outputs t0 .. t1 gives exactly the offline output
there: every intermediate value those outputs need lies inside the window. `WindowStream`
recomputes such windows as inputs arrive. It costs (left + chunk + right) / chunk times the
offline work, and it holds no model state, so any model with a bounded receptive field and no
absolute positions streams with it unchanged.

    inputs   ....[ left | emit these | right ]....
                  └──── window given to fn ────┘
"""

from __future__ import annotations

from typing import Callable

import torch


class WindowStream:
    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],  # (..., T) -> (..., ratio * T)
        left: int,
        right: int,
        ratio: int,
        chunk: int = 1,  # outputs are produced once this many new input steps are ready
        first_chunk: int | None = None,  # a smaller first chunk for a faster first output
    ):
        if left < 0 or right < 0 or ratio < 1 or chunk < 1:
            raise ValueError(f"left {left}, right {right} must be >= 0; ratio {ratio}, chunk {chunk} >= 1")
        self.fn, self.left, self.right, self.ratio = fn, left, right, ratio
        self.chunk, self.first_chunk = chunk, first_chunk or chunk
        self.buffer: torch.Tensor | None = None  # inputs [offset, total)
        self.offset = self.total = self.emitted = 0

    def push(self, x: torch.Tensor) -> torch.Tensor | None:
        """Append inputs (..., n); returns the outputs now computable, or None."""
        self.buffer = x if self.buffer is None else torch.cat([self.buffer, x], dim=-1)
        self.total += x.shape[-1]
        ready = self.total - self.right
        need = self.first_chunk if self.emitted == 0 else self.chunk
        return self._run(ready) if ready - self.emitted >= need else None

    def flush(self) -> torch.Tensor | None:
        """The outputs of every input still pending (the end of the sequence is known now)."""
        return self._run(self.total) if self.total > self.emitted else None

    def _run(self, ready: int) -> torch.Tensor:
        assert self.buffer is not None
        start = max(0, self.emitted - self.left)
        end = min(self.total, ready + self.right)
        window = self.buffer[..., start - self.offset:end - self.offset]
        y = self.fn(window)
        out = y[..., (self.emitted - start) * self.ratio:(ready - start) * self.ratio]
        self.emitted = ready
        drop = max(0, self.emitted - self.left) - self.offset  # inputs no later window reaches
        if drop > 0:
            self.buffer = self.buffer[..., drop:]
            self.offset += drop
        return out
