"""What a checkpoint stores when its decoder names a pretrained base: only what training changed.

model.safetensors of a checkpoint whose config has `decoder.source`:

    adaptor.*, mtp.*                      unisono's own parts
    encoder.*                             unless the encoder is a frozen named source
    decoder.*.lora_A.* / lora_B.*         the low-rank adapters (`decoder.lora`)
    decoder.<name>, name in decoder.tuned base parameters trained in full
    decoder.new_rows.embed_tokens         the rows the base does not have (ids from the base's
    decoder.new_rows.lm_head              vocabulary size on: special and speech tokens, padding),
                                          of the output head only when it is not tied

Every other decoder weight is the base's, read from its source (the cache) at load. Saving
checks that claim first: a base weight that no longer equals the source's (training changed
it outside the adapters) is an error naming it, instead of a checkpoint that silently loses it.
"""

from __future__ import annotations

from fnmatch import fnmatch
from typing import TYPE_CHECKING

import torch

from unisono.model.adapters import base_parameter_name, is_adapter_parameter

if TYPE_CHECKING:
    from unisono.model.unisono import Unisono

NEW_EMBED_ROWS = "decoder.new_rows.embed_tokens"
NEW_HEAD_ROWS = "decoder.new_rows.lm_head"
PREFIX = "decoder."


def _is_tuned(name: str, patterns: list[str]) -> bool:
    return any(fnmatch(base_parameter_name(name), p) for p in patterns)


def is_base_weight(model: "Unisono", key: str) -> bool:
    """A state-dict key whose value the base provides (not stored in the checkpoint)."""
    if not key.startswith(PREFIX):
        return False
    name = key[len(PREFIX):]
    return not is_adapter_parameter(name) and not _is_tuned(name, model.config.decoder.tuned)


def _name_of(module: torch.nn.Module, param: torch.nn.Parameter) -> str:
    return next(name for name, p in module.named_parameters(remove_duplicate=False) if p is param)


def _vocabulary_tables(model: "Unisono") -> list[tuple[str, str, torch.nn.Parameter]]:
    """(stored key, decoder parameter name, parameter) of the input embeddings and an untied output head."""
    decoder = model.decoder
    embed = decoder.get_input_embeddings().weight
    tables = [(NEW_EMBED_ROWS, _name_of(decoder, embed), embed)]
    head = decoder.get_output_embeddings().weight
    if head is not embed:
        tables.append((NEW_HEAD_ROWS, _name_of(decoder, head), head))
    return tables


def stored_state(model: "Unisono", state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The part of `state` (the model's state dict, a frozen named encoder and a tied head already
    dropped) that the base does not hold; raises if a base weight was changed."""
    rows_from = model.base_vocab_rows
    out = {k: v for k, v in state.items() if not is_base_weight(model, k)}
    for key, name, table in _vocabulary_tables(model):
        if PREFIX + name not in out:  # a table trained in full is stored whole already
            out[key] = table.detach()[rows_from:]
    check_base_unchanged(model, set(out))
    return out


@torch.no_grad()
def check_base_unchanged(model: "Unisono", stored: set[str]) -> None:
    """Every decoder weight the checkpoint leaves out must still equal the source's (in the
    model's dtype); the vocabulary tables are compared on the base's rows."""
    from contextlib import ExitStack

    from safetensors import safe_open

    from unisono.model.pretrained import base_weights

    rows_from = model.base_vocab_rows
    tables = {name for _, name, _ in _vocabulary_tables(model)}
    changed = []
    with ExitStack() as stack:
        handles = [stack.enter_context(safe_open(str(f), framework="pt")) for f in base_weights(model.config.decoder.source)]
        where = {k: handle for handle in handles for k in handle.keys()}
        for name, param in model.decoder.named_parameters():
            if PREFIX + name in stored or not is_base_weight(model, PREFIX + name):
                continue
            base_name = base_parameter_name(name)
            if base_name not in where:
                changed.append(f"{name} (the base has no such weight)")
                continue
            reference = where[base_name].get_tensor(base_name)
            current = param.detach()
            if name in tables:
                current = current[:rows_from]
            if current.shape != reference.shape or not torch.equal(reference.to(current.dtype), current.cpu()):
                changed.append(name)
    if changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise ValueError(
            f"training changed {len(changed)} weights of the base decoder ({shown}) that the checkpoint would not store: "
            "train them through adapters (decoder.lora) or list them in decoder.tuned so they are stored in full"
        )


def train_only_new_rows(model: "Unisono") -> list[str]:
    """Make the vocabulary tables trainable on their new rows only (special and speech tokens):
    a gradient hook zeroes the rows of the base's own vocabulary, so optimisers without weight
    decay on embeddings (AdamW with zero gradients moves nothing) leave them bit for bit as the
    base has them. Returns the parameter names (Unisono's) made trainable."""
    rows_from = model.base_vocab_rows
    if rows_from is None:
        raise ValueError("the decoder has no pretrained base (decoder.source): every row is its own")
    names = []
    for _, name, table in _vocabulary_tables(model):
        if getattr(table, "_unisono_new_rows_hook", False):
            names.append(PREFIX + name)
            continue

        def keep_base_rows(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()
            grad[:rows_from] = 0
            return grad

        table.requires_grad_(True)
        table.register_hook(keep_base_rows)
        table._unisono_new_rows_hook = True
        names.append(PREFIX + name)
    return names


@torch.no_grad()
def apply_stored_state(model: "Unisono", state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy the stored new vocabulary rows into the tables; returns the rest for load_state_dict."""
    state = dict(state)
    rows_from = model.base_vocab_rows
    for key, name, table in _vocabulary_tables(model):
        rows = state.pop(key, None)
        if rows is None:
            if PREFIX + name not in state:
                raise ValueError(f"the checkpoint holds neither {key} nor {PREFIX + name}: its new vocabulary rows are missing")
            continue
        expected = (table.shape[0] - rows_from, table.shape[1])
        if tuple(rows.shape) != expected:
            raise ValueError(
                f"{key} holds {tuple(rows.shape)} but the vocabulary needs {expected} (rows {rows_from}..{table.shape[0]}): "
                "the checkpoint was written for another vocabulary or another base"
            )
        table[rows_from:] = rows.to(table.dtype)
    return state


__all__ = ["NEW_EMBED_ROWS", "NEW_HEAD_ROWS", "apply_stored_state", "check_base_unchanged", "is_base_weight", "stored_state",
           "train_only_new_rows"]
