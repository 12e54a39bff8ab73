"""The LLM decoder: a transformers causal LM (Qwen3, Qwen3-MoE, Llama, Qwen2, Gemma 3), built or loaded.

A pretrained decoder comes from a source string (see unisono.model.pretrained and .sources).

unisono uses the base model (`.model`, returning final normalised hidden states) and the
output head (`.lm_head`) separately: the MTP branches need the hidden states, and logits are
only computed where they are needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen3Config,
    Qwen3MoeConfig,
)

from unisono.model.config import DecoderConfig

FAMILIES: dict[str, type[PretrainedConfig]] = {
    "qwen3": Qwen3Config,
    "qwen3_moe": Qwen3MoeConfig,
    "llama": LlamaConfig,
    "qwen2": Qwen2Config,
    "gemma3_text": Gemma3TextConfig,
}


def hf_config(config: DecoderConfig, vocab_size: int) -> PretrainedConfig:
    if config.family not in FAMILIES:
        raise ValueError(f"decoder family must be one of {sorted(FAMILIES)}, got {config.family!r}")
    fields: dict[str, Any] = dict(config.hf)
    fields["vocab_size"] = vocab_size
    if config.family == "qwen3_moe":
        fields.setdefault("output_router_logits", True)
        fields.setdefault("router_aux_loss_coef", config.router_aux_loss_coef)
    hf = FAMILIES[config.family](**fields)
    hf._attn_implementation = "sdpa"
    if config.family == "qwen3_moe":
        hf._experts_implementation = "eager"  # a loop over experts: any dtype, any device
    return hf


def build_decoder(config: DecoderConfig, vocab_size: int) -> PreTrainedModel:
    """A decoder with random weights, or loaded from `config.source` and resized to `vocab_size`."""
    if config.source is None:
        return AutoModelForCausalLM.from_config(hf_config(config, vocab_size), attn_implementation="sdpa")
    return load_decoder(config.source, vocab_size)


def load_decoder(source: str | Path, vocab_size: int) -> PreTrainedModel:
    """A pretrained decoder (any source string, or a local transformers directory), its vocabulary
    resized to `vocab_size`.

    Resizing keeps the existing rows (the text tokens keep their embeddings); new rows
    (special and speech tokens) are initialised by transformers (mean of the old rows).
    """
    from unisono.model.pretrained import load_base_decoder

    model = load_base_decoder(str(source))
    if model.get_input_embeddings().num_embeddings < vocab_size:
        model.resize_token_embeddings(vocab_size)
    return model


def decoder_config_from_hf(path: str | Path) -> DecoderConfig:
    """The DecoderConfig describing a local transformers checkpoint (used with `source`)."""
    from unisono.model.pretrained import decoder_config_from_source

    return decoder_config_from_source(str(path))


def router_aux_loss(router_logits: tuple[torch.Tensor, ...] | None, decoder: nn.Module, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The MoE router load-balancing loss (Switch Transformer), as transformers computes it."""
    if not router_logits:
        return None
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    cfg = decoder.config
    return load_balancing_loss_func(router_logits, cfg.num_experts, cfg.num_experts_per_tok, attention_mask)
