"""Verification of multi-token proposals against the main head's greedy choices.

Terms (after vLLM's rejection sampler, specialised to greedy decoding):

- **pending token**: the token the main head chose at the last verified position; it is
  certain (it is what greedy decoding would emit next) and is fed first in the next pass.
- **proposal**: the pending token followed by K **draft** tokens d_1..d_K from the MTP
  branches. One decoder pass over the proposal gives the main head's greedy choice g_i after
  each of its tokens (g_0 follows the pending token, g_i follows d_i).
- **accepted prefix**: the longest prefix of drafts with d_i == g_{i-1}: exactly the tokens
  greedy decoding would have produced one pass at a time.
- **bonus token**: g_k after the accepted prefix of length k; it becomes the next pending
  token, so every pass yields k + 1 tokens and the output is identical to greedy decoding.

Example: drafts [5, 7, 9], greedy choices [5, 7, 2, 4] -> 2 accepted, bonus token 2.
"""

from __future__ import annotations

import torch


def accepted_lengths(
    drafts: torch.Tensor,  # (B, K) draft tokens
    greedy: torch.Tensor,  # (B, K + 1) main-head argmax after the pending token and each draft
    n_drafts: torch.Tensor | None = None,  # (B,) drafts per row (ragged proposals); None: all K
) -> torch.Tensor:
    """Length of the accepted prefix per row, (B,) in 0..K."""
    B, K = drafts.shape
    match = drafts == greedy[:, :K]  # (B, K)
    if n_drafts is not None:
        match &= torch.arange(K, device=drafts.device)[None, :] < n_drafts[:, None]
    # cumprod turns [1, 1, 0, 1] into [1, 1, 0, 0]: only the prefix before the first mismatch counts
    return match.long().cumprod(dim=1).sum(dim=1)


def bonus_tokens(greedy: torch.Tensor, accepted: torch.Tensor) -> torch.Tensor:
    """The main head's choice after each row's accepted prefix, (B,)."""
    return greedy.gather(1, accepted[:, None]).squeeze(1)
