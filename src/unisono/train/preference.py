"""Preference losses as pure functions (in the style of TRL's DPOTrainer), and the log-probabilities
they read.

    logits_i = (log π(y_w|x) - log π(y_l|x)) - (log π_ref(y_w|x) - log π_ref(y_l|x))

    sigmoid   DPO (Rafailov et al., 2023):       -log σ(β logits)             (label smoothing ε:
              -(1-ε) log σ(β logits) - ε log σ(-β logits), cDPO)
    ipo       IPO (Azar et al., 2023):            (logits - 1/(2β))²
    offset    DPO with an offset (ODPO, Amini et al., 2024): -log σ(β logits - Δ), Δ = α · the pair's
              reward margin: a pair whose chosen candidate is far better must be separated further

y are the speech tokens of a TTS answer (and its <|speech_end|> <|end|>): the prompt's tokens are
context, not scored. The implicit rewards β (log π - log π_ref) of both sides are returned for the
logs (their margin and how often the chosen one is ahead).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossType = Literal["sigmoid", "ipo", "offset"]


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: LossType = "sigmoid",
    label_smoothing: float = 0.0,
    margin: torch.Tensor | None = None,
    offset_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the implicit rewards of the chosen and rejected answers, from summed
    log-probabilities (B,). `margin` (B,): the pairs' reward margins, for loss_type "offset"."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    logits = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)
    if loss_type == "sigmoid":
        losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif loss_type == "offset":
        if margin is None:
            raise ValueError("loss_type 'offset' needs the pairs' reward margins")
        losses = -F.logsigmoid(beta * logits - offset_scale * margin.to(logits))
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}: sigmoid, ipo or offset")
    chosen_rewards = beta * (policy_chosen - reference_chosen).detach()
    rejected_rewards = beta * (policy_rejected - reference_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def sequence_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) sum of log p(target) over the positions whose target is not -100. logits (B, L, V)
    predict targets (B, L) at the same position (already shifted)."""
    mask = targets != -100
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def model_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor,
                mel: torch.Tensor | None = None, mel_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) summed log-probabilities of each row's targets under a unisono model. `targets` as a
    Batch holds them: the token at a position, learned from the position before. `mel`: the clips
    whose adaptor frames fill the rows' <|audio|> spans, in order (through the frozen encoder)."""
    feats = lengths = None
    if mel is not None:  # a frozen encoder stays out of the graph (encode_audio); the adaptor follows its flags
        feats, lengths = model.encode_audio(mel, mel_lengths)
    embeds = model.embed_prompt(input_ids, feats, lengths)
    hidden = model.decoder.model(inputs_embeds=embeds, attention_mask=attention_mask.long()).last_hidden_state
    return sequence_logps(model.logits(hidden[:, :-1]), targets[:, 1:])
