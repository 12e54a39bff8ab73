"""The one decoding loop: greedy, sampling, and MTP-verified multi-token decoding.

Every mode (ASR, TTS, realtime) decodes through `generate`. Each iteration feeds the pending
token and, with MTP, the K drafts proposed for the tokens after it; one decoder pass then
verifies the drafts (`unisono.decode.verify`). Greedy decoding is the case K = 0.

Batches are ragged: rows accept different numbers of drafts. Instead of cropping the KV cache
per row, rejected tokens' cache slots are masked out (the attention mask has holes), and each
row carries its own rotary positions. The output is token for token the greedy output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from unisono.decode.propose import MTPProposer
from unisono.decode.sampling import SamplingConfig, choose
from unisono.decode.stats import DecodeStats
from unisono.decode.verify import accepted_lengths, bonus_tokens
from unisono.model.mtp import MTPHead


class Proposer(Protocol):
    """Drafts tokens for verification (`MTPProposer`; tests use an oracle)."""

    def record(self, positions: torch.Tensor, embeds: torch.Tensor, hidden: torch.Tensor, valid: torch.Tensor) -> None: ...

    def propose(self, n: torch.Tensor, pending: torch.Tensor, active: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor: ...


class Decodable(Protocol):
    """What the loop needs from a model (`unisono.model.unisono.Unisono` provides it)."""

    mtp: MTPHead | None

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor: ...  # (B, T) -> (B, T, D)

    def decoder_forward(self, embeds, attention_mask, positions, cache) -> torch.Tensor: ...  # -> (B, T, D)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor: ...  # (..., D) -> (..., V)

    def new_kv_cache(self): ...


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    mtp: bool = True  # draft with the MTP head when the model has one and decoding is greedy
    n_drafts: int | None = None  # branches to use (None: all)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    stop_ids: tuple[int, ...] = ()


@dataclass
class GenerationOutput:
    tokens: list[list[int]]  # per row, without the stop token
    stopped: list[bool]  # per row: reached a stop token (False: hit max_new_tokens)
    stats: DecodeStats  # the whole batch
    row_stats: list[DecodeStats]  # per row


@torch.no_grad()
def generate(
    model: Decodable,
    prompt_embeds: torch.Tensor,  # (B, L, D), left-padded
    prompt_mask: torch.Tensor,  # (B, L) bool, True on real positions
    config: GenerationConfig,
    allowed: torch.Tensor | None = None,  # (V,) bool: tokens generation may produce
    proposer: Proposer | None = None,  # drafts from elsewhere than the model's MTP head
) -> GenerationOutput:
    B, L, D = prompt_embeds.shape
    device = prompt_embeds.device
    if not config.stop_ids:
        raise ValueError("GenerationConfig.stop_ids is empty: give the end-of-turn token id")
    if (prompt_mask.sum(1) == 0).any():
        raise ValueError("every prompt needs at least one position")
    use_mtp = config.mtp and (proposer is not None or model.mtp is not None) and config.sampling.greedy
    K = (config.n_drafts or _default_drafts(model)) if use_mtp else 0
    if use_mtp and K == 0:
        raise ValueError("drafting needs n_drafts when the model has no MTP head")
    row_stats = [DecodeStats(n_branches=K, passes=1) for _ in range(B)]  # the prefill pass counts
    forward_calls = 1
    generator = None
    if config.sampling.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.sampling.seed)
    stop = torch.tensor(config.stop_ids, device=device)

    def pick(logits: torch.Tensor) -> torch.Tensor:  # (B, T, V) -> (B, T)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        if config.sampling.greedy:
            return logits.argmax(-1)
        return choose(logits[:, 0], config.sampling, generator)[:, None]

    # ---- prefill -------------------------------------------------------------------------
    prompt_mask = prompt_mask.bool()
    positions = (prompt_mask.long().cumsum(1) - 1).clamp(min=0)  # (B, L)
    cache = model.new_kv_cache()
    kv_mask = prompt_mask.long()  # (B, S) which cache slots may be attended
    hidden = model.decoder_forward(prompt_embeds, kv_mask, positions, cache)  # (B, L, D)
    pending = pick(model.logits(hidden[:, -1:]))[:, 0]  # (B,) left padding: the last slot is real
    n = prompt_mask.sum(1)  # (B,) verified positions

    if not K:
        proposer = None
    elif proposer is None:
        proposer = MTPProposer(model.mtp, model.embed_tokens, model.logits, model.head_rows, B, L + config.max_new_tokens, D, K, device, prompt_embeds.dtype)
    if proposer is not None:
        proposer.record(positions, prompt_embeds, hidden, prompt_mask)

    out: list[list[int]] = [[] for _ in range(B)]
    stopped = torch.isin(pending, stop)
    active = ~stopped
    if config.max_new_tokens <= 1:  # the pending token is all there is room for
        for b in active.nonzero().flatten().tolist():
            out[b] = [int(pending[b])][: config.max_new_tokens]
        active[:] = False

    # ---- decode --------------------------------------------------------------------------
    while active.any():
        decoding = active.clone()  # rows this pass decodes for; a finished row stays where it stopped
        drafts = proposer.propose(n, pending, active, allowed) if proposer else pending.new_zeros(B, 0)
        feed = torch.cat([pending[:, None], drafts], dim=1)  # (B, 1+K)
        T = feed.shape[1]
        feed_pos = n[:, None] + torch.arange(T, device=device)[None, :]  # (B, 1+K)
        feed_emb = model.embed_tokens(feed)
        kv_mask = torch.cat([kv_mask, active[:, None].long().expand(B, T)], dim=1)
        hidden = model.decoder_forward(feed_emb, kv_mask, feed_pos, cache)  # (B, 1+K, D)
        choice = pick(model.logits(hidden))  # (B, 1+K) greedy, or (B, 1) sampled
        forward_calls += 1

        accepted = accepted_lengths(drafts, choice) if K else torch.zeros(B, dtype=torch.long, device=device)
        keep = torch.arange(T, device=device)[None, :] <= accepted[:, None]  # (B, 1+K) fed tokens now verified
        kv_mask[:, -T:] &= keep.long()
        if proposer:
            proposer.record(feed_pos, feed_emb, hidden, keep & active[:, None])
        next_pending = bonus_tokens(choice, accepted)

        for b in active.nonzero().flatten().tolist():
            k = int(accepted[b])
            row_stats[b].passes += 1
            if K:
                row_stats[b].record_verification(K, k)
            new = feed[b, : 1 + k].tolist()
            ends = [i for i, t in enumerate(new) if t in config.stop_ids]
            if ends:  # an accepted draft closed the turn
                new = new[: ends[0]]
                stopped[b] = True
            out[b] += new[: config.max_new_tokens - len(out[b])]
            if stopped[b] or len(out[b]) >= config.max_new_tokens:
                active[b] = False
            elif bool(torch.isin(next_pending[b], stop)):
                stopped[b] = True
                active[b] = False
            elif len(out[b]) + 1 >= config.max_new_tokens:  # the pending token fills the budget: no pass needed
                out[b].append(int(next_pending[b]))
                active[b] = False
        # Only rows that decoded in this pass move on. A finished row is still fed (the batch stays
        # rectangular) and its meaningless "accepted" drafts must not advance it: its position would
        # run past the prompt + max_new_tokens that the proposer's buffers are sized for.
        n = n + (1 + accepted) * decoding
        pending = next_pending

    for b, s in enumerate(row_stats):
        s.tokens = len(out[b]) + int(stopped[b])
    stats = DecodeStats(n_branches=K)
    for s in row_stats:
        stats = stats.merge(s)
    stats.forward_calls = forward_calls
    return GenerationOutput(tokens=out, stopped=stopped.tolist(), stats=stats, row_stats=row_stats)


def _default_drafts(model) -> int:
    """The model's recorded draft count (config.mtp.default_drafts), else all its branches."""
    if model.mtp is None:
        return 0
    preferred = model.config.mtp.default_drafts
    return min(preferred, model.mtp.n_branches) if preferred else model.mtp.n_branches
