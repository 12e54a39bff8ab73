"""Choosing the next token from logits: greedy, or sampling with temperature / top-k / top-p."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingConfig:
    temperature: float = 0.0  # 0: greedy (argmax); the only setting MTP drafts are verified under
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def choose(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> tokens (B,)."""
    if config.greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / config.temperature
    if config.top_k > 0:
        kth = logits.topk(min(config.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > config.top_p  # keep the smallest set reaching top_p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@dataclass
class RepetitionAwareConfig:
    """Repetition-aware sampling (RAS) for speech tokens, as CosyVoice 2 does (`ras_sampling`):
    a token chosen as usual is kept unless it already occurs at least `window * tau` times among
    the last `window` tokens; then it is drawn again from the full distribution (no top-k/top-p),
    which breaks the loops a codec LM falls into (the same frame token over and over)."""

    window: int = 10  # CosyVoice's win_size
    tau: float = 0.1  # CosyVoice's tau_r: with window 10, a single earlier occurrence triggers a redraw

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"RAS window must be >= 1, got {self.window}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"RAS tau must be in (0, 1], got {self.tau}")


def choose_repetition_aware(
    logits: torch.Tensor,  # (V,) one sequence's next-token logits, disallowed tokens already -inf
    recent: list[int],  # the sequence's tokens so far (only the last `ras.window` are read)
    config: SamplingConfig,
    ras: RepetitionAwareConfig,
    generator: torch.Generator | None = None,
) -> int:
    """One token: `choose`, redrawn from the full distribution if it repeats too often."""
    token = int(choose(logits[None], config, generator)[0])
    window = recent[-ras.window :]
    if window.count(token) >= ras.window * ras.tau:
        temperature = config.temperature if config.temperature > 0 else 1.0
        probs = (logits.float() / temperature).softmax(-1)
        token = int(torch.multinomial(probs, 1, generator=generator)[0])
    return token
