"""Multi-token prediction (MTP) head.

At position t the decoder's main head predicts x(t+1). Branch h = 1..H predicts x(t+1+h):

    h_0(t) = final hidden state of the decoder
    h_h(t) = Block_h( W_h [ RMSNorm(h_{h-1}(t)) ; RMSNorm(E x(t+h)) ] )       # (B, T, D)
    logits_h(t) = lm_head( RMSNorm_h(h_h(t)) )

E and lm_head are the decoder's own (shared); each branch has its two input norms, the
projection W_h (2D -> D), one Transformer block (causal self-attention over the branch's own
sequence + SwiGLU MLP) and an output norm. With H = 5 a decoder pass yields a 6-token proposal.

Training loss (`mtp_loss`): next-token loss + sum_h w_h * loss_h with w_h = decay**h.
Inference: the proposer in `unisono.decode.propose` runs the branches over a few positions with
a `BranchCache` each. With a draft vocabulary (`MTPConfig.draft_vocab_size`) a branch's logits
cover only the most frequent training tokens: on a large vocabulary the shared output head is
most of a branch's cost, and a draft outside the set would rarely have been accepted anyway.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unisono.model.config import MTPConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one fused op: the branches run at every decoding step, where op count is the cost
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (B, 1, T, hd) of the rotary embedding at positions (B, T)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.float()[..., None] * inv_freq  # (B, T, hd/2)
    angles = torch.cat([angles, angles], -1)[:, None]  # (B, 1, T, hd)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (rotate-half convention). x (B, H, T, hd)."""
    hd = x.shape[-1]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class BranchCache:
    """Keys and values of one branch's attention, stored in slots allocated up front.

    Slots are appended in time order; a slot whose token was rejected is invalidated, not
    removed, so each batch row can keep a different number of tokens (ragged batches).
    """

    def __init__(self, batch_size: int, n_heads: int, head_dim: int, capacity: int, device, dtype):
        self.k = torch.zeros(batch_size, n_heads, capacity, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.valid = torch.zeros(batch_size, capacity, dtype=torch.bool, device=device)
        self.length = 0

    def _grow(self, needed: int) -> None:
        capacity = self.k.shape[2]
        if needed <= capacity:
            return
        new = max(needed, 2 * capacity)
        pad = new - capacity
        self.k = F.pad(self.k, (0, 0, 0, pad))
        self.v = F.pad(self.v, (0, 0, 0, pad))
        self.valid = F.pad(self.valid, (0, pad))

    def append(self, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k, v (B, H, T, hd), valid (B, T) -> all keys, values (B, H, S, hd) and validity (B, S)."""
        T = k.shape[2]
        self._grow(self.length + T)
        s = slice(self.length, self.length + T)
        self.k[:, :, s], self.v[:, :, s], self.valid[:, s] = k, v, valid
        self.length += T
        return self.k[:, :, : self.length], self.v[:, :, : self.length], self.valid[:, : self.length]

    def invalidate_last(self, n_slots: int, keep: torch.Tensor) -> None:
        """Of the last `n_slots` slots, keep only those where keep (B, n_slots) is True."""
        s = slice(self.length - n_slots, self.length)
        self.valid[:, s] &= keep


class Block(nn.Module):
    """Pre-norm Transformer block: causal self-attention with RoPE, then a SwiGLU MLP."""

    def __init__(self, dim: int, n_heads: int, intermediate_size: int, rope_theta: float, eps: float = 1e-6):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"MTP block width {dim} is not divisible by {n_heads} heads")
        self.n_heads, self.head_dim, self.rope_theta = n_heads, dim // n_heads, rope_theta
        self.attn_norm = RMSNorm(dim, eps)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.mlp_norm = RMSNorm(dim, eps)
        self.gate_up = nn.Linear(dim, 2 * intermediate_size, bias=False)
        self.down = nn.Linear(intermediate_size, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D)
        positions: torch.Tensor,  # (B, T) rotary positions
        valid: torch.Tensor,  # (B, T) which inputs are real tokens
        cache: BranchCache | None = None,
    ) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).split(D, dim=-1)
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hd)
        cos, sin = rope_angles(positions, self.head_dim, self.rope_theta, q.dtype)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        past = 0 if cache is None else cache.length
        if cache is not None:
            k, v, key_valid = cache.append(k, v, valid)  # (B, nh, S, hd), (B, S)
        else:
            key_valid = valid
        S = k.shape[2]
        query_slot = past + torch.arange(T, device=x.device)  # (T,)
        causal = torch.arange(S, device=x.device)[None, :] <= query_slot[:, None]  # (T, S)
        own = torch.arange(S, device=x.device)[None, :] == query_slot[:, None]  # padding queries see themselves
        mask = (causal[None] & key_valid[:, None, :]) | own[None]  # (B, T, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])  # (B, nh, T, hd)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, D))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class MTPBranch(nn.Module):
    def __init__(self, dim: int, n_heads: int, intermediate_size: int, rope_theta: float, eps: float):
        super().__init__()
        self.hidden_norm = RMSNorm(dim, eps)
        self.embed_norm = RMSNorm(dim, eps)
        self.proj = nn.Linear(2 * dim, dim, bias=False)
        self.block = Block(dim, n_heads, intermediate_size, rope_theta, eps)
        self.out_norm = RMSNorm(dim, eps)

    def forward(self, h_prev, emb, positions, valid, cache: BranchCache | None = None) -> torch.Tensor:
        """h_prev, emb (B, T, D) -> this branch's hidden states (B, T, D) (before out_norm)."""
        x = self.proj(torch.cat([self.hidden_norm(h_prev), self.embed_norm(emb)], dim=-1))
        return self.block(x, positions, valid, cache)


class MTPHead(nn.Module):
    def __init__(self, config: MTPConfig, dim: int, n_heads: int, intermediate_size: int, rope_theta: float, eps: float = 1e-6):
        super().__init__()
        self.config = config
        self.n_heads = config.n_heads or n_heads
        inter = config.intermediate_size or intermediate_size
        self.branches = nn.ModuleList(
            MTPBranch(dim, self.n_heads, inter, rope_theta, eps) for _ in range(config.n_branches)
        )
        if config.draft_vocab_size:
            # -1 until the MTP stage counts its training targets (`set_draft_vocabulary`)
            self.register_buffer("draft_ids", torch.full((config.draft_vocab_size,), -1, dtype=torch.long))
        else:
            self.draft_ids = None

    @property
    def draft_vocabulary(self) -> torch.Tensor | None:
        """The token ids drafts are chosen among, or None (the whole vocabulary)."""
        if self.draft_ids is None or bool((self.draft_ids < 0).any()):
            return None
        return self.draft_ids

    def set_draft_vocabulary(self, ids: torch.Tensor) -> None:
        """Draft among `ids` (at most draft_vocab_size of them; fewer are padded with repeats)."""
        if self.draft_ids is None:
            raise ValueError("this MTP head has no draft vocabulary (mtp.draft_vocab_size is not set)")
        ids = ids.to(torch.long).flatten()[: len(self.draft_ids)]
        if ids.numel() == 0:
            raise ValueError("an empty draft vocabulary")
        self.draft_ids.copy_(ids.repeat(-(-len(self.draft_ids) // ids.numel()))[: len(self.draft_ids)])

    @property
    def n_branches(self) -> int:
        return len(self.branches)

    def forward(self, hidden: torch.Tensor, embeds: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
        """Teacher-forced branches over whole sequences (training).

        hidden (B, L, D): the decoder's final hidden states; embeds (B, L, D): its input
        embeddings; valid (B, L). Returns the normalised hidden states of each branch; branch h
        at position t is to predict x(t+1+h).
        """
        B, L, _ = hidden.shape
        positions = torch.arange(L, device=hidden.device).expand(B, L)
        outs, h = [], hidden
        for i, branch in enumerate(self.branches, start=1):
            # embedding of x(t+h), zero past the end
            emb = F.pad(embeds[:, i:], (0, 0, 0, i))  # (B, L, D)
            h = branch(h, emb, positions, valid)
            outs.append(branch.out_norm(h))
        return outs

    def new_caches(self, batch_size: int, capacity: int, device, dtype) -> list[BranchCache]:
        b = self.branches[0].block
        return [BranchCache(batch_size, b.n_heads, b.head_dim, capacity, device, dtype) for _ in self.branches]


def frequent_tokens(token_lists, size: int, always: list[int]) -> torch.Tensor:
    """The draft vocabulary: `always` (e.g. the special tokens) first, then the most frequent ids
    of `token_lists` (ties by id), `size` ids in all."""
    from collections import Counter

    counts = Counter(t for ids in token_lists for t in ids)
    for t in always:
        counts.pop(t, None)
    ranked = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return torch.tensor((list(dict.fromkeys(always)) + ranked)[:size], dtype=torch.long)


def branch_weights(n_branches: int, decay: float) -> list[float]:
    """w_h = decay**h for h = 1..n_branches."""
    return [decay**h for h in range(1, n_branches + 1)]


def mtp_loss(
    main_logits: torch.Tensor,  # (N0, V) logits at positions with a next-token target
    main_targets: torch.Tensor,  # (N0,)
    branch_logits: list[torch.Tensor],  # per branch (N_h, V)
    branch_targets: list[torch.Tensor],  # per branch (N_h,)
    decay: float,
    main_weight: float = 1.0,  # 0 when the backbone is frozen (MTP stage 1)
) -> tuple[torch.Tensor, dict[str, float]]:
    """main_weight * next-token loss + sum_h decay**h * loss_h -> (loss, per-head losses to log)."""
    main = F.cross_entropy(main_logits.float(), main_targets)
    total = main * main_weight
    logs = {"loss_main": float(main.detach())}
    for h, (lg, tg, w) in enumerate(zip(branch_logits, branch_targets, branch_weights(len(branch_logits), decay)), 1):
        if tg.numel() == 0:
            continue
        lh = F.cross_entropy(lg.float(), tg)
        total = total + w * lh
        logs[f"loss_mtp{h}"] = float(lh.detach())
    return total, logs


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2 style init; output projections scaled down by depth."""
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, 0.0, std / math.sqrt(2) if name.endswith(("out.weight", "down.weight")) else std)
