"""The model side of a stage: where it starts, the vocabulary expansion, what each phase trains.

- `initial_model`: a checkpoint directory (the previous stage's `model/`), or a registered
  config with fresh adaptor/decoder weights and a byte-level BPE trained on the stage's texts.
- `expand_speech_vocabulary`: the pretraining stage's first act. The vocabulary layout
  [text | special | speech] puts new speech rows after every existing id, so text and special
  tokens keep their ids and embeddings; the new rows start at the mean of the existing ones
  plus small noise (new tokens then start with ordinary logits instead of extreme ones).
- `remap_speech_vocabulary`: the speech rows moved onto another codebook of the same audio (each new
  token's row the mean of the old rows of its frames), when the codec's tokenizer is replaced.
- `set_trainable`: the phase's parameter patterns; a frozen encoder stays frozen whatever they say.
  On a pretrained base, "new_rows" trains the vocabulary rows the base lacks (its own rows get no
  gradient), and a pattern reaching a base weight not listed in decoder.tuned is refused at once
  (the checkpoint could not store it).
- `pretrained_model`: the fresh model on pretrained parts of `model.init: pretrained`.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from unisono.model.unisono import Unisono
from unisono.train.config import ModelInit


def initial_model(init: ModelInit, texts: Iterable[str]) -> Unisono:
    """The model a stage starts from (float32, CPU)."""
    from unisono.model.config import CONFIGS, UnisonoConfig
    from unisono.model.unisono import build

    if init.pretrained is not None:
        return pretrained_model(init.pretrained)
    path = Path(init.init)
    if (path / "config.json").is_file():
        if init.overrides:
            raise ValueError(f"model.overrides apply to a fresh model; {path} is a checkpoint (remove the overrides)")
        return Unisono.load(path)
    if init.init not in CONFIGS:
        raise ValueError(
            f"model.init {init.init!r} is neither a checkpoint directory (no config.json there) "
            f"nor a registered config ({', '.join(sorted(CONFIGS))})"
        )
    config = UnisonoConfig.from_name(init.init, **init.overrides)
    texts = list(texts)
    if not texts:
        raise ValueError("a fresh model trains its tokenizer on the training texts, and there are none")
    return build(config, texts, vocab_size=init.tokenizer_vocab_size)


def pretrained_model(spec) -> Unisono:
    """A fresh model on the decoder and encoder `spec` (a PretrainedInit) names; the text tokenizer is the base's."""
    from unisono.model.config import AdaptorConfig, LoRAConfig, MTPConfig
    from unisono.model.pretrained import pretrained_config
    from unisono.model.unisono import build

    def part(cls, fields, where):
        try:
            return cls(**fields) if fields is not None else None
        except TypeError as e:
            raise ValueError(f"model.pretrained.{where}: {e}") from None

    config = pretrained_config(
        spec.decoder, spec.encoder, n_speech_tokens=spec.n_speech_tokens,
        lora=part(LoRAConfig, spec.lora, "lora"), mtp=part(MTPConfig, spec.mtp, "mtp"),
        adaptor=part(AdaptorConfig, spec.adaptor, "adaptor"),
    )
    config.decoder.tuned = list(spec.tuned)
    return build(config)


@torch.no_grad()
def set_draft_vocabulary(model: Unisono, texts: Iterable[str]) -> None:
    """The MTP head drafts among the special and speech tokens and the text tokens most frequent
    in `texts` (the training targets), as many as its draft_vocab_size."""
    from unisono.model.mtp import frequent_tokens

    vocab = model.vocab
    always = [vocab.id(name) for name in vocab.special_tokens]
    always += range(vocab.speech_offset, vocab.speech_offset + vocab.n_speech)
    ids = frequent_tokens((vocab.encode_text(t) for t in texts if t), model.config.mtp.draft_vocab_size, always)
    model.mtp.set_draft_vocabulary(ids)


@torch.no_grad()
def expand_speech_vocabulary(model: Unisono, n_speech_tokens: int, noise_std: float = 0.02) -> Unisono:
    """Grow the speech-token block to `n_speech_tokens` codes (in place); text rows unchanged."""
    old = model.vocab
    if n_speech_tokens <= old.n_speech:
        return model
    vocab = old.with_speech_tokens(n_speech_tokens)
    keep = old.speech_offset + old.n_speech  # rows in use before: text, special, old speech codes
    embed = model.decoder.get_input_embeddings().weight
    mean = embed[:keep].float().mean(0)
    model.decoder.resize_token_embeddings(vocab.size, mean_resizing=False)
    for table in {id(t): t for t in (model.decoder.get_input_embeddings().weight, model.decoder.get_output_embeddings().weight)}.values():
        new_rows = table[keep:]
        new_rows.copy_(mean + noise_std * torch.randn_like(new_rows, dtype=torch.float32))
    model.vocab = vocab
    model.config.vocab.n_speech_tokens = n_speech_tokens
    return model


@torch.no_grad()
def remap_speech_vocabulary(model: Unisono, old_tokens, new_tokens, n_speech_tokens: int) -> float:
    """Move the speech-token block (in place) onto a new codebook of `n_speech_tokens` codes, given the old and
    new tokens of the same frames: each new row is the mean of the old rows over the frames the new token takes
    (`remap_token_embedding`), so it lies in the old rows' convex hull and its logit never exceeds the best old
    speech logit; text and special rows, and so every text logit, stay as they were. Returns the share of a new
    token's frames its commonest old token covers."""
    old = model.vocab
    embed = model.decoder.get_input_embeddings().weight
    old_rows = embed[old.speech_offset: old.speech_offset + old.n_speech].float().clone()
    rows, agreement = remap_token_embedding(old_rows, old_tokens, new_tokens, n_speech_tokens)
    vocab = old.with_speech_tokens(n_speech_tokens)
    if vocab.size != old.size:
        model.decoder.resize_token_embeddings(vocab.size, mean_resizing=False)
    for table in {id(t): t for t in (model.decoder.get_input_embeddings().weight, model.decoder.get_output_embeddings().weight)}.values():
        table[vocab.speech_offset: vocab.speech_offset + n_speech_tokens] = rows.to(table.dtype)
        table[vocab.speech_offset + n_speech_tokens:] = old_rows.mean(0).to(table.dtype)  # padding rows, never emitted
    model.vocab = vocab
    model.config.vocab.n_speech_tokens = n_speech_tokens
    return agreement


NEW_ROWS = "new_rows"  # the trainable pattern of the vocabulary rows a pretrained base lacks


def set_trainable(model: torch.nn.Module, patterns: list[str], encoder_frozen: bool = True) -> list[str]:
    """requires_grad = name matches a pattern; returns the trainable parameter names."""
    new_rows = NEW_ROWS in patterns
    patterns = [p for p in patterns if p != NEW_ROWS]
    names = []
    for name, p in model.named_parameters():
        train = any(fnmatch(name, pat) for pat in patterns)
        if encoder_frozen and name.startswith("encoder."):
            train = False
        p.requires_grad_(train)
        if train:
            names.append(name)
    if getattr(model, "base_vocab_rows", None) is not None:
        _check_base_frozen(model, names)
    if new_rows:
        from unisono.model.delta import train_only_new_rows

        if getattr(model, "base_vocab_rows", None) is None:
            raise ValueError(f"the trainable pattern {NEW_ROWS!r} needs a decoder on a pretrained base (decoder.source)")
        names += [n for n in train_only_new_rows(model) if n not in names]
    if not names:
        raise ValueError(f"no parameter matches the trainable patterns {patterns}")
    return names


def _check_base_frozen(model: Unisono, names: list[str]) -> None:
    """A base weight may train only when decoder.tuned lists it: the checkpoint stores nothing else of the base."""
    from unisono.model.delta import is_base_weight

    base = [n for n in names if is_base_weight(model, n)]
    if base:
        raise ValueError(
            f"the trainable patterns reach {len(base)} weights of the pretrained base ({', '.join(base[:3])}"
            f"{', ...' if len(base) > 3 else ''}) that the checkpoint would not store: train the base through "
            f"'*lora_*' and {NEW_ROWS!r}, or list them in model.pretrained.tuned"
        )


def trained_names(model: Unisono, phases) -> list[str]:
    """Every parameter some phase trains (its state may differ from the run's init)."""
    out: list[str] = []
    for phase in phases:
        patterns = [p for p in phase.trainable if p != NEW_ROWS]
        for name, _ in model.named_parameters():
            if name not in out and any(fnmatch(name, pat) for pat in patterns):
                out.append(name)
    return out


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: matrices decay; norms, biases and embeddings (tied to the output head) do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "embed_tokens" not in name and "lm_head" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def remap_token_embedding(embedding: torch.Tensor, old_tokens: np.ndarray, new_tokens: np.ndarray,
                          size: int) -> tuple[torch.Tensor, float]:
    """(K_old, E) embeddings of the old tokens -> (size, E) of the new: each the mean over the frames the new
    token takes of their old tokens' embeddings (the mean of all old embeddings for a token never seen), and
    the share of a new token's frames its commonest old token covers (how alike the two codebooks are)."""
    if len(old_tokens) != len(new_tokens):
        raise ValueError(f"{len(old_tokens)} old tokens for {len(new_tokens)} new ones: tokenize the same frames")
    old = torch.from_numpy(np.asarray(old_tokens, dtype=np.int64))
    new = torch.from_numpy(np.asarray(new_tokens, dtype=np.int64))
    sums = torch.zeros(size, embedding.shape[1]).index_add_(0, new, embedding[old].float())
    counts = torch.bincount(new, minlength=size).float()
    mapped = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], embedding.float().mean(0))
    pairs = torch.bincount(new * len(embedding) + old, minlength=size * len(embedding)).reshape(size, len(embedding))
    agreement = float(pairs.max(1).values.sum() / max(1, len(new)))
    return mapped, agreement
