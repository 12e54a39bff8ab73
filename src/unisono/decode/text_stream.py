"""Text as tokens arrive: the new characters after each token, never half a character.

Byte-level BPE splits a multi-byte character (a Chinese character, an emoji) over several
tokens; decoding after each token would show U+FFFD in between. The text is decoded from all
tokens so far and only a stable extension of what was already given is released (vLLM's
incremental detokenizer does the same with offsets)."""

from __future__ import annotations

from typing import Any


class TextStream:
    def __init__(self, vocab: Any):
        self.vocab = vocab
        self.tokens: list[int] = []
        self.text = ""  # what push() has released so far

    def push(self, token: int) -> str:
        """Add a token; the text it completes ("" while a character is unfinished)."""
        self.tokens.append(token)
        return self._release(self.vocab.decode_text(self.tokens), final=False)

    def finish(self) -> str:
        """The rest of the text once no token will follow."""
        return self._release(self.vocab.decode_text(self.tokens), final=True)

    def _release(self, decoded: str, final: bool) -> str:
        if not final and decoded.endswith("\ufffd"):
            return ""
        if not decoded.startswith(self.text) or len(decoded) <= len(self.text):
            return ""  # the tokenizer rewrote earlier text (whitespace clean-up): hold until it settles
        delta = decoded[len(self.text):]
        self.text = decoded
        return delta
