"""Draft proposals from the MTP branches, kept in step with the verified sequence.

Positions are logical, per row: 0..n-1 are the tokens already fed to the decoder and
verified (prompt included), n is the pending token, n+1.. the drafts. Branch h at position p
reads the hidden state of branch h-1 at p and the embedding of the token at p+h, and
predicts the token at p+h+1. So after a pass:

- branch h's positions p <= n-h read only verified or pending tokens: they are *certain*,
  computed once and kept in the branch's cache;
- positions n-h+1 .. n-1 read drafts: they are *tentative*, computed for this proposal and
  then invalidated in the cache (recomputed next time, when their tokens are known).

The proposal at position n-1 chains through the branches: branch 1 reads the pending token
and proposes d_1, branch 2 reads d_1 and proposes d_2, and so on.
"""

from __future__ import annotations

from typing import Callable

import torch

from unisono.model.mtp import MTPHead


def _gather(buf: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """buf (B, P, D), index (B, W) -> (B, W, D)."""
    return buf.gather(1, index[..., None].expand(-1, -1, buf.shape[-1]))


def _scatter(buf: torch.Tensor, index: torch.Tensor, values: torch.Tensor, valid: torch.Tensor) -> None:
    """buf[b, index[b, w]] = values[b, w] where valid[b, w]."""
    old = _gather(buf, index)
    buf.scatter_(1, index[..., None].expand(-1, -1, buf.shape[-1]), torch.where(valid[..., None], values, old))


class MTPProposer:
    def __init__(
        self,
        head: MTPHead,
        embed_tokens: Callable[[torch.Tensor], torch.Tensor],  # (B, T) ids -> (B, T, D)
        logits: Callable[[torch.Tensor], torch.Tensor],  # (B, D) hidden -> (B, V)
        head_rows: Callable[[torch.Tensor], torch.Tensor],  # ids (K,) -> the output head's rows (K, D)
        batch_size: int,
        max_positions: int,
        dim: int,
        n_drafts: int,
        device: torch.device,
        dtype: torch.dtype,
    ):
        if not 1 <= n_drafts <= head.n_branches:
            raise ValueError(f"n_drafts must be in 1..{head.n_branches} (the head's branches), got {n_drafts}")
        self.head, self.embed_tokens, self.logits, self.K = head, embed_tokens, logits, n_drafts
        # With a draft vocabulary the branches score only its rows of the output head.
        self.draft_ids = head.draft_vocabulary
        self.draft_rows = None if self.draft_ids is None else head_rows(self.draft_ids).to(dtype)
        P = max_positions + n_drafts + 2
        self.P = P
        self.embeds = torch.zeros(batch_size, P, dim, device=device, dtype=dtype)  # input embedding by position
        # hidden[0]: the decoder's final hidden states; hidden[h]: branch h's, for h < K
        self.hidden = [torch.zeros(batch_size, P, dim, device=device, dtype=dtype) for _ in range(n_drafts)]
        self.certain = torch.zeros(n_drafts, batch_size, dtype=torch.long, device=device)  # per branch: positions kept
        self.caches = head.new_caches(batch_size, 2 * max_positions, device, dtype)[:n_drafts]

    def record(self, positions: torch.Tensor, embeds: torch.Tensor, hidden: torch.Tensor, valid: torch.Tensor) -> None:
        """Store what a decoder pass fed and produced: positions (B, T), embeds and hidden (B, T, D)."""
        index = positions.clamp(0, self.P - 1)
        _scatter(self.embeds, index, embeds, valid)
        _scatter(self.hidden[0], index, hidden, valid)

    @torch.no_grad()
    def propose(
        self,
        n: torch.Tensor,  # (B,) verified positions per row
        pending: torch.Tensor,  # (B,) the pending token per row
        active: torch.Tensor,  # (B,) rows still decoding
        allowed: torch.Tensor | None = None,  # (V,) tokens the drafts may take
    ) -> torch.Tensor:
        """Drafts d_1..d_K for every row, (B, K)."""
        B = n.shape[0]
        rows = torch.arange(B, device=n.device)
        # finished rows are clamped like every other index here: their writes are masked out anyway
        _scatter(self.embeds, n[:, None].clamp(0, self.P - 1), self.embed_tokens(pending[:, None]), active[:, None])
        drafts = []
        for h in range(1, self.K + 1):
            branch, cache = self.head.branches[h - 1], self.caches[h - 1]
            start = self.certain[h - 1]  # (B,)
            width = int((n - start)[active].max()) if active.any() else 1
            ps = start[:, None] + torch.arange(width, device=n.device)[None, :]  # (B, W)
            valid = (ps < n[:, None]) & active[:, None]
            h_prev = _gather(self.hidden[h - 1], ps.clamp(0, self.P - 1))
            emb = _gather(self.embeds, (ps + h).clamp(0, self.P - 1))
            out = branch(h_prev, emb, ps, valid, cache)  # (B, W, D)
            if h < self.K:
                _scatter(self.hidden[h], ps.clamp(0, self.P - 1), out, valid)
            last = (n - 1 - start).clamp(0, width - 1)  # index of position n-1 in the window
            d = self._draft(branch.out_norm(out[rows, last]), allowed)  # (B,)
            drafts.append(d)
            _scatter(self.embeds, (n + h)[:, None].clamp(0, self.P - 1), self.embed_tokens(d[:, None]), active[:, None])
            cache.invalidate_last(width, valid & (ps <= (n - h)[:, None]))
            self.certain[h - 1] = torch.where(active, (n - h + 1).clamp(min=0), start)
        return torch.stack(drafts, dim=1)

    def _draft(self, hidden: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """hidden (B, D) -> the most likely allowed token (B,), over the draft vocabulary if any."""
        if self.draft_rows is None:
            logits = self.logits(hidden)  # (B, V)
        else:
            logits = hidden @ self.draft_rows.T  # (B, K)
            allowed = None if allowed is None else allowed[self.draft_ids]
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        d = logits.argmax(-1)
        return d if self.draft_rows is None else self.draft_ids[d]
