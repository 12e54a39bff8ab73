"""A decode session: one sequence's live state, fed and decoded one decoder pass at a time.

`generate` decodes a fixed batch from a prompt to the end and throws its cache away. A session
keeps everything one sequence needs between passes, so input can arrive while it lives
(Moshi's streaming state; vLLM's per-request state):

    s = Session(model, SessionConfig(stop_ids=(end,), max_new_tokens=64))
    s.prefill(prompt_embeds)         # (T, D): the prompt; chooses the first token
    for token in s.tokens(): ...     # token by token, to a stop token or max_new_tokens
    s.append(more_embeds)            # a new user turn, an audio chunk: context grows, a new response starts
    s.step()                         # one decoder pass: 1 token, or 1 + accepted drafts with MTP
    s.cancel()

Terms:

- **context**: the positions 0..n-1 already fed to the decoder (prompt, appended input, and the
  tokens the session produced); their keys and values are in the session's KV cache.
- **pending token**: the token chosen after the context, not yet fed. It is emitted (output,
  callback) as soon as it is chosen, so a response's first token leaves with the prefill pass;
  the next pass feeds it. A stop token is pending but never emitted; `append` feeds it, so a
  closed turn stays closed in the context.
- **response**: the tokens emitted since the last `prefill`/`append`; `max_new_tokens` bounds it.

With an MTP head and greedy settings each pass feeds the pending token and K drafts from the
head (`decode.propose`), and keeps the accepted prefix plus the bonus token (`decode.verify`):
the output is token for token the greedy output. Rejected drafts are cropped from the end of
the cache, so a session's cache never has holes (the batched `Scheduler` masks them instead).

Output: `step()` returns the tokens it emitted, `tokens()` iterates over all of them (stepping as
needed), `output` lists them, and `on_token(token)` is called for each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from unisono.decode.propose import MTPProposer
from unisono.decode.sampling import RepetitionAwareConfig, SamplingConfig, choose, choose_repetition_aware
from unisono.decode.stats import DecodeStats
from unisono.decode.verify import accepted_lengths

STOP = "stop"  # a stop token was chosen
LENGTH = "length"  # the response reached max_new_tokens
CANCELLED = "cancelled"  # cancel() was called
ERROR = "error"  # the scheduler gave up on it (bad input, a failing callback)


@dataclass
class SessionConfig:
    max_new_tokens: int = 256  # per response: prefill and every append start a new one
    stop_ids: tuple[int, ...] = ()  # e.g. (vocab.end_id,)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    allowed: torch.Tensor | None = None  # (V,) bool: the tokens the session may produce (text only, speech only...)
    repetition: RepetitionAwareConfig | None = None  # RAS for speech tokens (CosyVoice 2); None: off
    mtp: bool = True  # draft with the model's MTP head; only used for plain greedy decoding
    n_drafts: int | None = None  # None: the model's recorded default, else all its branches

    def __post_init__(self) -> None:
        if not self.stop_ids:
            raise ValueError("SessionConfig.stop_ids is empty: give the end-of-turn token id (vocab.end_id)")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.allowed is not None:
            if self.allowed.dtype != torch.bool or self.allowed.dim() != 1:
                raise ValueError(f"allowed must be a 1-D bool tensor over the vocabulary, got {self.allowed.dtype} "
                                 f"of shape {tuple(self.allowed.shape)}")
            if not self.allowed.any():
                raise ValueError("allowed permits no token at all")

    @property
    def greedy(self) -> bool:
        """Argmax decoding: the only setting MTP drafts are verified under."""
        return self.sampling.greedy and self.repetition is None


class Session:
    def __init__(self, model: Any, config: SessionConfig, on_token: Callable[[int], None] | None = None):
        """`model` offers the decoder interface of `unisono.model.unisono.Unisono`."""
        self.model, self.config, self.on_token = model, config, on_token
        self.device = model.device
        vocab_size = model.vocab.size
        if config.allowed is not None and config.allowed.shape[0] != vocab_size:
            raise ValueError(f"allowed covers {config.allowed.shape[0]} tokens but the model has {vocab_size}")
        self._allowed = None if config.allowed is None else config.allowed.to(self.device)
        self.K = _draft_count(model, config) if (config.mtp and model.mtp is not None and config.greedy) else 0
        self.generator = None
        if config.sampling.seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(config.sampling.seed)
        self.stats = DecodeStats(n_branches=self.K)
        self.output: list[int] = []  # every token emitted, all responses
        self._stop = set(config.stop_ids)
        self._finish: str | None = None
        self._cancelled = False  # set from any thread; read between passes
        self._response = 0  # tokens emitted in the current response
        self._n = 0  # context length (logical positions 0..n-1)
        self._pending: int | None = None
        self._started = False
        self._cursor = 0  # tokens() has yielded output[:cursor]
        self._cache = None  # the decoder's KV cache (None while a Scheduler holds it in its batch)
        self._kv_mask: torch.Tensor | None = None  # (1, S) long: cache slots that may be attended
        self._proposer: MTPProposer | None = None
        self.scheduled = False  # a Scheduler decodes it: step() and append() go through the scheduler
        self.error: str | None = None

    # ---- state -------------------------------------------------------------------------------
    @property
    def finish_reason(self) -> str | None:
        """None while the response goes on, else STOP, LENGTH, CANCELLED or ERROR."""
        if self._finish is None and self._cancelled:
            return CANCELLED
        return self._finish

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def context_length(self) -> int:
        return self._n

    def cancel(self) -> None:
        """Stop decoding after the current pass. Safe to call from another thread; a finished
        response stays as it finished. A cancelled session takes no more input."""
        self._cancelled = True

    # ---- input -------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, embeds: torch.Tensor) -> list[int]:
        """Feed the prompt, (T, D) or (1, T, D), and choose the first token. Returns the tokens emitted."""
        if self._started:
            raise ValueError("this session is already prefilled; add input with append()")
        return self._feed_input(embeds)

    @torch.no_grad()
    def append(self, embeds: torch.Tensor) -> list[int]:
        """Feed more input, (T, D) or (1, T, D), after what the session has (the pending token first)
        and start a new response from it. Returns the tokens emitted."""
        if not self._started:
            raise ValueError("prefill the session before appending to it")
        if self.finish_reason in (CANCELLED, ERROR):
            raise ValueError(f"this session ended ({self.finish_reason}); start a new one")
        return self._feed_input(embeds)

    def _feed_input(self, embeds: torch.Tensor) -> list[int]:
        self._check_standalone()
        embeds = self.check_embeds(embeds)
        if self._pending is not None:  # the token chosen last is part of the context from now on
            pending = torch.tensor([[self._pending]], device=self.device)
            embeds = torch.cat([self.model.embed_tokens(pending), embeds], dim=1)
        T = embeds.shape[1]
        positions = self._n + torch.arange(T, device=self.device)[None, :]  # (1, T)
        if self._cache is None:
            self._cache = self.model.new_kv_cache()
            self._kv_mask = torch.zeros(1, 0, dtype=torch.long, device=self.device)
        self._kv_mask = torch.cat([self._kv_mask, self._kv_mask.new_ones(1, T)], dim=1)
        hidden = self.model.decoder_forward(embeds, self._kv_mask, positions, self._cache)  # (1, T, D)
        return self.take_input(embeds, hidden)

    def take_input(self, embeds: torch.Tensor, hidden: torch.Tensor) -> list[int]:
        """Take the pass that fed input (1, T, D) after the context, and its hidden states (1, T, D):
        record them for the MTP head, choose the first token of the new response. A Scheduler
        that prefills many prompts in one pass hands each session its rows here."""
        T = embeds.shape[1]
        positions = self._n + torch.arange(T, device=self.device)[None, :]  # (1, T)
        if self.K:
            self._ensure_proposer(self._n + T)
            self._proposer.record(positions, embeds, hidden, torch.ones(1, T, dtype=torch.bool, device=self.device))
        self.stats.passes += 1
        self._n += T
        self._pending, self._started, self._finish, self._response = None, True, None, 0
        return self._take(self._pick(self.model.logits(hidden[0, -1])))

    def check_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """(T, D) or (1, T, D) input embeddings -> (1, T, D) on the model's device and dtype."""
        D = self.model.config.decoder.hidden_size
        if not isinstance(embeds, torch.Tensor):
            raise ValueError(f"input embeddings must be a torch.Tensor (T, {D}), got {type(embeds).__name__}")
        if embeds.dim() == 2:
            embeds = embeds[None]
        if embeds.dim() != 3 or embeds.shape[0] != 1 or embeds.shape[2] != D or embeds.shape[1] == 0:
            raise ValueError(f"input embeddings must have shape (T, {D}) with T >= 1, got {tuple(embeds.shape)}")
        if not embeds.is_floating_point() or not torch.isfinite(embeds).all():
            raise ValueError("input embeddings must be finite floating-point values")
        return embeds.to(device=self.device, dtype=self.model.dtype)

    # ---- decoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[int]:
        """One decoder pass. Returns the tokens it emitted (none once finished)."""
        if self.finished:
            return []
        if not self._started:
            raise ValueError("prefill the session before stepping it")
        self._check_standalone()
        fed = self.plan()  # (T,)
        T = fed.shape[0]
        positions = self._n + torch.arange(T, device=self.device)[None, :]  # (1, T)
        embeds = self.model.embed_tokens(fed[None])  # (1, T, D)
        self._kv_mask = torch.cat([self._kv_mask, self._kv_mask.new_ones(1, T)], dim=1)
        hidden = self.model.decoder_forward(embeds, self._kv_mask, positions, self._cache)  # (1, T, D)
        new, kept = self.commit(fed, self.model.logits(hidden[0]), positions[0], embeds[0], hidden[0])
        if kept < T:  # rejected drafts are the last slots: crop them, or mask them where the cache cannot crop
            if all(getattr(layer, "is_croppable", False) for layer in getattr(self._cache, "layers", [None])):
                self._cache.crop(-(T - kept))
                self._kv_mask = self._kv_mask[:, : self._kv_mask.shape[1] - (T - kept)]
            else:
                self._kv_mask[:, -T:] = (torch.arange(T, device=self.device) < kept).long()
        return new

    def tokens(self) -> Iterator[int]:
        """Every emitted token not yet yielded, stepping until the response finishes."""
        while True:
            while self._cursor < len(self.output):
                self._cursor += 1
                yield self.output[self._cursor - 1]
            if self.finished:
                return
            self.step()

    def plan(self) -> torch.Tensor:
        """The tokens the next pass feeds: the pending token, then K drafts with MTP. (1 + K,)"""
        pending = torch.tensor([self._pending], device=self.device)
        if not self.K:
            return pending
        self._ensure_proposer(self._n + self.K + 1)
        active = torch.ones(1, dtype=torch.bool, device=self.device)
        n = torch.tensor([self._n], device=self.device)
        drafts = self._proposer.propose(n, pending, active, self._allowed)[0]  # (K,)
        return torch.cat([pending, drafts])

    def commit(
        self,
        fed: torch.Tensor,  # (T,) what the pass fed: plan()
        logits: torch.Tensor,  # (T, V) the main head after each fed token
        positions: torch.Tensor,  # (T,)
        embeds: torch.Tensor,  # (T, D)
        hidden: torch.Tensor,  # (T, D)
    ) -> tuple[list[int], int]:
        """Take a pass's result: verify drafts, emit tokens, choose the next pending token.
        Returns the tokens emitted and how many fed tokens stay in the context (the rest must
        be dropped from the cache by the caller)."""
        T = fed.shape[0]
        self.stats.passes += 1
        if self.K:
            choice = self._masked(logits).argmax(-1)  # (T,)
            k = int(accepted_lengths(fed[None, 1:], choice[None])[0])
            self.stats.record_verification(T - 1, k)
            bonus = int(choice[k])
        else:
            k, bonus = 0, self._pick(logits[-1])
        new: list[int] = []
        kept = 1  # the pending token
        for d in fed[1 : 1 + k].tolist():  # accepted drafts: exactly what greedy decoding would emit
            kept += 1
            if d in self._stop:  # the turn closed inside the drafts; the stop token is in the context
                self.stats.tokens += 1
                self._pending, self._finish = None, STOP
                break
            new.append(self._emit(d))
            if self._response >= self.config.max_new_tokens:
                self._pending, self._finish = None, LENGTH
                break
        else:
            new += self._take(bonus)
        self._n += kept
        if self.K:
            self._proposer.record(positions[None], embeds[None], hidden[None], (torch.arange(T, device=self.device) < kept)[None])
        return new, kept

    # ---- helpers -----------------------------------------------------------------------------
    def _take(self, token: int) -> list[int]:
        """`token` was chosen after the context: it becomes the pending token, emitted, unless it
        stops the response."""
        if token in self._stop:
            self.stats.tokens += 1
            self._pending, self._finish = token, STOP
            return []
        self._pending = token
        self._emit(token)
        if self._response >= self.config.max_new_tokens:
            self._finish = LENGTH
        return [token]

    def _emit(self, token: int) -> int:
        self.output.append(token)
        self._response += 1
        self.stats.tokens += 1
        if self.on_token is not None:
            self.on_token(token)
        return token

    def _masked(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self._allowed is None else logits.masked_fill(~self._allowed, float("-inf"))

    def _pick(self, logits: torch.Tensor) -> int:
        """logits (V,) -> the next token, under the session's sampling settings."""
        logits = self._masked(logits)
        if self.config.repetition is not None:
            return choose_repetition_aware(logits, self.output, self.config.sampling, self.config.repetition, self.generator)
        return int(choose(logits[None], self.config.sampling, self.generator)[0])

    def _ensure_proposer(self, positions_needed: int) -> None:
        """The MTP proposer's position buffers hold `positions_needed` (grown by doubling: appends
        make a session's context longer than any size fixed up front)."""
        p = self._proposer
        if p is None:
            D = self.model.config.decoder.hidden_size
            self._proposer = MTPProposer(self.model.mtp, self.model.embed_tokens, self.model.logits, self.model.head_rows, 1,
                                         max(256, 2 * positions_needed), D, self.K, self.device, self.model.dtype)
            return
        if positions_needed + self.K + 2 <= p.P:
            return
        grow = 2 * positions_needed + self.K + 2 - p.P
        p.embeds = F.pad(p.embeds, (0, 0, 0, grow))
        p.hidden = [F.pad(h, (0, 0, 0, grow)) for h in p.hidden]
        p.P += grow

    def _check_standalone(self) -> None:
        if self.scheduled:
            raise RuntimeError("this session is decoded by a Scheduler: read its tokens from the scheduler's request")


def _draft_count(model: Any, config: SessionConfig) -> int:
    """The drafts per pass: the caller's n_drafts, else the model's recorded default, else all branches."""
    if config.n_drafts is not None:
        if not 1 <= config.n_drafts <= model.mtp.n_branches:
            raise ValueError(f"n_drafts must be in 1..{model.mtp.n_branches} (the MTP head's branches), got {config.n_drafts}")
        return config.n_drafts
    preferred = model.config.mtp.default_drafts
    return min(preferred, model.mtp.n_branches) if preferred else model.mtp.n_branches
