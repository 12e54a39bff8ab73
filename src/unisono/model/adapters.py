"""Low-rank adapters (peft LoRA) on the decoder: what fine-tuning trains on a pretrained base.

    add_lora(decoder, LoRAConfig(rank=16))    q/k/v/o and MLP projections become
                                              base_layer (frozen) + lora_A, lora_B (trainable)
    is_adapter_parameter(name)                the names a checkpoint stores for them
    merge_lora(decoder)                       folds W + (alpha / r) B A into plain Linear layers:
                                              inference pays nothing for the adapters

peft's `inject_adapter_in_model` keeps the transformers model as it is (no PeftModel wrapper),
so `decoder.model`, `decoder.lm_head` and the decode path stay the same. lora_B starts at zero:
a model with fresh adapters computes exactly what its base computes.
"""

from __future__ import annotations

from torch import nn

from unisono.model.config import LoRAConfig

ADAPTER_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".lora_magnitude_vector.")


def add_lora(decoder: nn.Module, config: LoRAConfig) -> nn.Module:
    """Inject LoRA layers in place; base weights are frozen, adapters trainable (peft's default)."""
    from peft import LoraConfig
    from peft.functional import inject_adapter_in_model

    if config.rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {config.rank}")
    peft_config = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                             target_modules=list(config.targets), bias="none")
    try:
        return inject_adapter_in_model(peft_config, decoder)
    except ValueError as e:  # e.g. no module matches the targets
        raise ValueError(f"LoRA targets {config.targets} do not fit the decoder: {e}") from None


def is_adapter_parameter(name: str) -> bool:
    return any(marker in name for marker in ADAPTER_MARKERS)


def base_parameter_name(name: str) -> str:
    """The base model's name of a parameter that LoRA wrapped ("q_proj.base_layer.weight" -> "q_proj.weight")."""
    return name.replace(".base_layer.", ".")


def has_lora(decoder: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in decoder.modules())


def merge_lora(decoder: nn.Module) -> int:
    """Merge every LoRA layer into its base weight and put the plain layer back; returns the count."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(name, m) for name, m in decoder.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in wrapped:
        module.merge()
        parent_name, _, attribute = name.rpartition(".")
        parent = decoder.get_submodule(parent_name) if parent_name else decoder
        setattr(parent, attribute, module.get_base_layer())
    return len(wrapped)


__all__ = ["add_lora", "base_parameter_name", "has_lora", "is_adapter_parameter", "merge_lora"]
