"""Does a model on a pretrained base keep its text ability? The same decoder with its adapters off
(the base as it was installed) and on (the trained model), on the same text:

    passages (held out: written for this repository, never trained on)
      ─► perplexity, nats per token of the base's tokenizer
    prompts  ─► the base's own chat template ─► greedy replies, side by side,
                and how many match the base's reply word for word

The realtime mode answers with the decoder's own knowledge, so fine-tuning for speech must not
take it away. The new vocabulary rows (special and speech tokens) are left out of both measures:
a reply never writes them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from unisono.eval.prompt_file import dataclass_row, read_prompt_file

DEFAULT_TEXTS = Path(__file__).parent / "prompts" / "text.jsonl"
KINDS = ("passage", "prompt")


@dataclass(frozen=True)
class TextItem:
    id: str
    kind: str  # "passage": scored by perplexity; "prompt": answered
    text: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError("text must be a non-empty string")


def read_text_items(path: Path) -> list[TextItem]:
    return read_prompt_file(path, lambda row: dataclass_row(TextItem, row))


@dataclass
class TextAbility:
    name: str
    nats_per_token: float
    tokens: int
    replies: dict[str, str] = field(default_factory=dict)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)


@contextmanager
def adapters(decoder: Any, enabled: bool) -> Iterator[None]:
    """The decoder's LoRA adapters switched on or off for the duration (on again afterwards)."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in decoder.modules() if isinstance(m, LoraLayer)]
    if not layers and not enabled:
        raise ValueError("this decoder has no adapters to switch off (merged, or not trained with LoRA)")
    for m in layers:
        m.enable_adapters(enabled)
    try:
        yield
    finally:
        for m in layers:
            m.enable_adapters(True)


class TextAbilityEval:
    """A model on a pretrained base (its decoder names a source), answering through the base's chat template."""

    def __init__(self, model: Any):
        from unisono.eval.judge import InstructLLM

        source = model.config.decoder.source
        if not source:
            raise ValueError("the model's decoder was trained from scratch: it has no base whose text ability to keep")
        # Rows the base does not have (special and speech tokens, padding) are never written, and
        # perplexity is of the base's rows only: the text distribution a reply is drawn from.
        self.base_rows = model.base_vocab_rows or model.vocab.text_slots
        rows = model.decoder.get_output_embeddings().weight.shape[0]
        self.llm = InstructLLM(source, model=model.decoder, suppress_tokens=list(range(self.base_rows, rows)))

    def measure(self, items: list[TextItem], name: str, adapters_on: bool = True, max_new_tokens: int = 48) -> TextAbility:
        import torch

        llm = self.llm
        nll, count, replies = 0.0, 0, {}
        with adapters(llm.model, adapters_on), torch.no_grad():
            for item in items:
                if item.kind == "passage":
                    ids = llm.tokenizer(item.text, return_tensors="pt").input_ids
                    logits = llm.model(input_ids=ids).logits[0, :-1, : self.base_rows]
                    nll += float(torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:], reduction="sum"))
                    count += ids.shape[1] - 1
                else:
                    chat = llm.chat_ids([{"role": "user", "content": item.text}])
                    replies[item.id] = llm.generate(chat, max_new_tokens).strip()
        return TextAbility(name, nll / count if count else float("nan"), count, replies)


def same_replies(a: TextAbility, b: TextAbility) -> int:
    """Prompts both answered with exactly the same words."""
    return sum(a.replies[k].split() == b.replies.get(k, "").split() for k in a.replies)


__all__ = ["DEFAULT_TEXTS", "TextAbility", "TextAbilityEval", "TextItem", "adapters", "read_text_items", "same_replies"]
