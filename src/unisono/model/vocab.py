"""The unified vocabulary and the one prompt format shared by ASR, TTS and realtime.

Token ids are laid out in three blocks, text first so that a text LLM's embeddings keep
their ids when the vocabulary is expanded:

    0 ........ n_text-1 ... | special_offset .................. | speech_offset ........... | padding
    text tokenizer (and any | named special tokens, then        | <|s_0|> ... <|s_{N-1}|>  | (to a multiple
    rows the base LLM has   | reserved slots (layout 2)         |                          |  of 64)
    beyond its tokenizer)   |                                   |                          |

Layout 2 (every new model) gives the special block a fixed size, `special_slots` (128), of
which the named tokens take the first ids and the rest wait: appending a special token to
SPECIAL_TOKENS takes the next free slot and moves no speech id, so a checkpoint's speech rows
always mean the same codes. Layout 1 (checkpoints written before it, e.g. the first embedded
`unisono-tiny`) has no reserved slots: its special block holds exactly the tokens it was saved
with (vocab.json), and a token added since has no id in it (a clear error, never shifted ids).
A checkpoint records its layout in config.json (`vocab.layout`) and vocab.json.

The prompt format (ChatML-like, with role and task tokens instead of role words so that it
does not depend on the text tokenizer):

    <|system|> persona / instructions <|end|>                      (optional)
    <|user|> <|asr|> <|audio_start|> <|audio|> x N <|audio_end|> <|end|>
    <|assistant|> transcript ... <|end|>

- A turn is a role token, parts, and `<|end|>`. Parts are text, an audio span (N placeholder
  tokens whose embeddings the adaptor supplies), a speech-token span
  (`<|speech_start|> <|s_i|>... <|speech_end|>`), or a bare special token (task, language).
- The task token opens the user turn: `<|asr|>` transcribe, `<|tts|>` speak the text (with
  instructions in the system turn), `<|s2tt|>` translate speech to text, `<|chat|>` spoken or
  written dialogue, `<|continue|>` interleaved text-speech continuation, `<|caption|>`
  describe the audio, `<|text|>` plain text modelling.
- Generation starts after `<|assistant|>` and stops at `<|end|>`.

Example (ASR of a 2 s clip at 12.5 Hz, 25 audio positions):

    >>> vocab.encode_prompt([Turn("user", [Special("asr"), Audio(25)])]).ids[:3]
    [<|user|>, <|asr|>, <|audio_start|>]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal, Sequence, Union

from tokenizers import Tokenizer

if TYPE_CHECKING:
    from unisono.model.config import VocabConfig

ROLES = ("system", "user", "assistant")
TASKS = ("asr", "tts", "s2tt", "chat", "continue", "caption", "text")
LANGUAGES = ("en", "zh")

# Order is part of the checkpoint format: append, never reorder.
SPECIAL_TOKENS: tuple[str, ...] = (
    "pad",
    "end",
    *ROLES,
    *TASKS,
    "audio_start",
    "audio",
    "audio_end",
    "speech_start",
    "speech_end",
    *LANGUAGES,
)

PAD_MULTIPLE = 64  # embedding tables padded to a multiple of 64 for efficient matmuls
# Layout 2's special block: room for 109 more special tokens after today's 19 (tasks, languages,
# paralinguistic tags) before a checkpoint would need a new layout.
SPECIAL_SLOTS = 128
# Layout 1's special block when vocab.json does not list it: the 19 tokens layout 1 ended with.
LEGACY_SPECIAL_COUNT = 19


def special(name: str) -> str:
    return f"<|{name}|>"


@dataclass(frozen=True)
class Special:
    """A bare special token, e.g. Special("asr") or Special("en")."""

    name: str


@dataclass(frozen=True)
class Audio:
    """An audio span of `n_positions` adaptor frames (placeholders filled by the model)."""

    n_positions: int


@dataclass(frozen=True)
class Speech:
    """A span of discrete speech tokens (codebook indices 0..N-1)."""

    tokens: tuple[int, ...]


Part = Union[str, Special, Audio, Speech]


@dataclass
class Turn:
    role: Literal["system", "user", "assistant"]
    parts: list[Part] = field(default_factory=list)


@dataclass
class EncodedPrompt:
    ids: list[int]
    # (start index in ids, n_positions) for each audio span, in order
    audio_spans: list[tuple[int, int]]
    # index from which the assistant's own tokens start (targets for training), or len(ids)
    target_start: int


class Vocab:
    """Text tokenizer + special tokens + speech tokens, with the prompt format."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        n_speech_tokens: int = 0,
        *,
        special_slots: int | None = SPECIAL_SLOTS,
        text_slots: int | None = None,
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
    ):
        """`special_slots`: size of the special block (layout 2); None: exactly `special_tokens`
        (layout 1). `text_slots`: rows before the special block (None: the tokenizer's size); a
        base LLM whose embedding has more rows than its tokenizer has tokens keeps them all."""
        self.tokenizer = tokenizer
        self.n_text = tokenizer.get_vocab_size(with_added_tokens=True)
        if text_slots is not None and text_slots < self.n_text:
            raise ValueError(f"text_slots {text_slots} is smaller than the tokenizer's {self.n_text} tokens")
        self.text_slots = self.n_text if text_slots is None else text_slots
        self.special_slots = special_slots
        names = tuple(special_tokens)
        if special_slots is not None:
            if len(names) > special_slots:
                raise ValueError(f"{len(names)} special tokens do not fit the {special_slots} reserved slots")
            block = special_slots
        else:
            block = len(names)
        self.special_tokens = names
        self.special_offset = self.text_slots
        self._special_ids = {name: self.special_offset + i for i, name in enumerate(names)}
        self.speech_offset = self.special_offset + block
        self.n_speech = n_speech_tokens
        used = self.speech_offset + n_speech_tokens
        self.size = -(-used // PAD_MULTIPLE) * PAD_MULTIPLE  # (padded) embedding rows

    @classmethod
    def from_config(cls, tokenizer: Tokenizer, config: "VocabConfig") -> "Vocab":
        """A new vocabulary laid out as `config` says (layout 2; layout 1 is only read from checkpoints)."""
        if config.layout != 2:
            raise ValueError(f"new vocabularies use layout 2 (reserved special slots); got layout {config.layout}")
        return cls(tokenizer, config.n_speech_tokens, special_slots=config.special_slots, text_slots=config.text_slots)

    @property
    def layout(self) -> int:
        """1: the special block is exactly the named tokens; 2: a fixed block of reserved slots."""
        return 1 if self.special_slots is None else 2

    # ---- ids ---------------------------------------------------------------------------
    def id(self, name: str) -> int:
        """Id of a special token by name: vocab.id("end")."""
        try:
            return self._special_ids[name]
        except KeyError:
            if name in SPECIAL_TOKENS:
                raise KeyError(
                    f"special token {name!r} is newer than this vocabulary (layout 1, {len(self.special_tokens)} special "
                    "tokens, no reserved slots); retrain from a layout-2 model to use it"
                ) from None
            raise KeyError(f"unknown special token {name!r}; known: {', '.join(self.special_tokens)}") from None

    @property
    def pad_id(self) -> int:
        return self.id("pad")

    @property
    def end_id(self) -> int:
        return self.id("end")

    @property
    def audio_id(self) -> int:
        return self.id("audio")

    def speech_id(self, code: int) -> int:
        if not 0 <= code < self.n_speech:
            raise ValueError(f"speech code {code} outside the codebook of {self.n_speech}")
        return self.speech_offset + code

    def is_text(self, token_id: int) -> bool:
        return 0 <= token_id < self.n_text

    def is_speech(self, token_id: int) -> bool:
        return self.speech_offset <= token_id < self.speech_offset + self.n_speech

    def with_speech_tokens(self, n_speech_tokens: int) -> "Vocab":
        """The vocabulary expanded with a block of speech tokens; text and special ids unchanged."""
        return Vocab(self.tokenizer, n_speech_tokens, special_slots=self.special_slots, text_slots=self.text_slots,
                     special_tokens=self.special_tokens)

    # ---- text --------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode_text(self, ids: Iterable[int]) -> str:
        """Text of the text tokens in `ids`; special and speech tokens are dropped."""
        return self.tokenizer.decode([i for i in ids if self.is_text(i)], skip_special_tokens=True).strip()

    def speech_codes(self, ids: Iterable[int]) -> list[int]:
        return [i - self.speech_offset for i in ids if self.is_speech(i)]

    def token_str(self, token_id: int) -> str:
        if self.is_text(token_id):
            return self.tokenizer.id_to_token(token_id)
        if self.special_offset <= token_id < self.special_offset + len(self.special_tokens):
            return special(self.special_tokens[token_id - self.special_offset])
        if self.is_speech(token_id):
            return special(f"s_{token_id - self.speech_offset}")
        return special("unused")

    # ---- prompt format -------------------------------------------------------------------
    def encode_part(self, part: Part, ids: list[int], audio_spans: list[tuple[int, int]]) -> None:
        if isinstance(part, str):
            ids += self.encode_text(part)
        elif isinstance(part, Special):
            ids.append(self.id(part.name))
        elif isinstance(part, Audio):
            ids.append(self.id("audio_start"))
            audio_spans.append((len(ids), part.n_positions))
            ids += [self.audio_id] * part.n_positions
            ids.append(self.id("audio_end"))
        elif isinstance(part, Speech):
            ids.append(self.id("speech_start"))
            ids += [self.speech_id(c) for c in part.tokens]
            ids.append(self.id("speech_end"))
        else:
            raise TypeError(f"prompt part must be str, Special, Audio or Speech, got {type(part).__name__}")

    def encode_prompt(self, turns: Sequence[Turn], add_generation_prompt: bool = True) -> EncodedPrompt:
        """Ids of a conversation. With `add_generation_prompt` and no closing assistant turn,
        ends with `<|assistant|>` so that generation continues from there.

        For training, pass the assistant turn too: `target_start` marks its first token.
        """
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        target_start = None
        for turn in turns:
            if turn.role not in ROLES:
                raise ValueError(f"role must be one of {ROLES}, got {turn.role!r}")
            ids.append(self.id(turn.role))
            if turn.role == "assistant":
                target_start = len(ids)
            for part in turn.parts:
                self.encode_part(part, ids, spans)
            ids.append(self.end_id)
        if add_generation_prompt and (not turns or turns[-1].role != "assistant"):
            ids.append(self.id("assistant"))
        return EncodedPrompt(ids=ids, audio_spans=spans, target_start=len(ids) if target_start is None else target_start)

    # ---- persistence ----------------------------------------------------------------------
    def save(self, directory: str | Path, tokenizer_file: str = "tokenizer.json", tokenizer_source: str | None = None) -> None:
        """vocab.json and the text tokenizer; with `tokenizer_source` (the pretrained decoder whose
        tokenizer this is) the tokenizer is named instead of copied."""
        directory = Path(directory)
        if tokenizer_source is None:
            self.tokenizer.save(str(directory / tokenizer_file))
        meta = {"layout": self.layout, "special_tokens": list(self.special_tokens), "special_slots": self.special_slots,
                "n_text": self.n_text, "text_slots": self.text_slots, "n_speech": self.n_speech,
                "tokenizer": tokenizer_source or tokenizer_file}
        (directory / "vocab.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(
        cls,
        directory: str | Path,
        tokenizer_file: str = "tokenizer.json",
        n_speech_tokens: int = 0,
        *,
        layout: int = 2,
        special_slots: int | None = SPECIAL_SLOTS,
        text_slots: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> "Vocab":
        """The vocabulary of a checkpoint directory, laid out as its config says (`VocabConfig`).
        `tokenizer`: the text tokenizer when the checkpoint names it instead of holding it."""
        directory = Path(directory)
        path = directory / tokenizer_file
        if path.is_file():
            tokenizer = Tokenizer.from_file(str(path))
        elif tokenizer is None:
            raise FileNotFoundError(f"text tokenizer not found at {path}; a checkpoint holds its tokenizer.json")
        meta_path = directory / "vocab.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        saved = tuple(meta.get("special_tokens", SPECIAL_TOKENS[:LEGACY_SPECIAL_COUNT] if layout == 1 else ()))
        if saved != SPECIAL_TOKENS[: len(saved)]:
            raise ValueError(f"{meta_path}: special tokens {saved} do not match this version's {SPECIAL_TOKENS}")
        if layout == 1:  # the block the checkpoint was trained with, however many tokens exist now
            return cls(tokenizer, n_speech_tokens, special_slots=None, text_slots=text_slots, special_tokens=saved)
        if layout != 2:
            raise ValueError(f"{directory}: vocabulary layout {layout} is unknown to this version (it reads 1 and 2)")
        if special_slots is None or special_slots < len(saved):
            raise ValueError(f"{directory}: a layout-2 vocabulary needs special_slots >= {len(saved)}, got {special_slots}")
        return cls(tokenizer, n_speech_tokens, special_slots=special_slots, text_slots=text_slots,
                   special_tokens=SPECIAL_TOKENS[:special_slots])


def train_text_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE tokenizer trained on `texts` (English, Mandarin, anything UTF-8).

    Byte-level means no unknown tokens: any string round-trips through encode/decode.
    """
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
