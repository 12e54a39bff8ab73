"""The unified model: audio encoder -> adaptor -> decoder (+ MTP head), one checkpoint format.

    mel (N, n_mels, T) ─► AudioEncoder (frozen) ─► (N, T/2, D_enc) ─► Adaptor ─► (N, T', D)
                                                                                   │ fills the
    ids (B, L) ─► embeddings (B, L, D) ◄──────────── <|audio|> placeholder positions ┘
                       │
                       ▼
                 decoder.model ─► hidden (B, L, D) ─► lm_head ─► next-token logits
                                         └──────────► MTPHead ─► logits of x(t+2) .. x(t+1+H)

A checkpoint is a directory: config.json (UnisonoConfig), model.safetensors, tokenizer.json
+ vocab.json (the unified vocabulary; the tokenizer is named, not copied, when it is the
pretrained decoder's own), and speech/ (the speech codec, when the vocabulary has
speech tokens; loaded on first use by `Unisono.speech_codec`). Pretrained parts named by a
source are not stored again: a frozen encoder with a `source`, and a decoder with a `source`,
of which the checkpoint keeps only what training changed (adapters, tuned layers, the new
vocabulary rows; see unisono.model.delta).
"""

from __future__ import annotations

import functools

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from unisono.model.adaptor import Adaptor
from unisono.model.config import UnisonoConfig
from unisono.model.decoder import build_decoder, router_aux_loss
from unisono.model.delta import apply_stored_state, is_base_weight, stored_state
from unisono.model.mtp import MTPHead, init_weights, mtp_loss
from unisono.model.vocab import Vocab

if TYPE_CHECKING:
    from unisono.modes.asr import Transcript
    from unisono.modes.tts import Speech

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SPEECH_DIR = "speech"


@dataclass
class Batch:
    """A training batch. Rows are right-padded; audio clips are listed in the order their
    `<|audio|>` spans appear (row by row, left to right)."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L) bool
    targets: torch.Tensor  # (B, L) the token at a position the model must learn to produce, else -100
    mel: torch.Tensor | None = None  # (N, n_mels, T) log-mel of the clips
    mel_lengths: torch.Tensor | None = None  # (N,)
    encoder_out: torch.Tensor | None = None  # (N, T_enc, D_enc) precomputed frozen-encoder output
    encoder_lengths: torch.Tensor | None = None  # (N,)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})


@dataclass
class LossOutput:
    loss: torch.Tensor
    logs: dict[str, float]


class Unisono(nn.Module):
    def __init__(self, config: UnisonoConfig, vocab: Vocab, load_encoder_source: bool = True, init_new_rows: bool = True):
        """`init_new_rows`: initialise the vocabulary rows a pretrained decoder lacks from its own
        rows (transformers' mean resizing); `load` skips it, the checkpoint holds them."""
        super().__init__()
        from unisono.model.encoder import AudioEncoder

        self.config, self.vocab = config, vocab
        self.quantized = False  # set by load(..., compute_type="int8")
        self.adapters_merged = False  # set by merge_adapters(): the base weights then differ from the source's
        self.checkpoint_dir: Path | None = None  # set by load(): where speech/ is read from
        object.__setattr__(self, "_speech_codec", None)  # not a submodule: saved in speech/, not in the weights
        if config.vocab.n_speech_tokens != vocab.n_speech:
            raise ValueError(
                f"config has {config.vocab.n_speech_tokens} speech tokens but the vocabulary {vocab.n_speech}"
            )
        _check_layout(config, vocab)
        enc = config.encoder
        self.encoder = AudioEncoder(enc)
        if enc.source and load_encoder_source:
            self.encoder.load_source_weights(enc.source)
        dec_hf = config.decoder.hf
        self.adaptor = Adaptor(config.adaptor, enc.d_model, config.decoder.hidden_size)
        self.base_vocab_rows: int | None = None  # rows of a pretrained decoder's own vocabulary
        if config.decoder.source:
            self.decoder = self._pretrained_decoder(init_new_rows)
        else:
            self.decoder = build_decoder(config.decoder, vocab.size)
        if config.decoder.lora is not None:
            from unisono.model.adapters import add_lora

            add_lora(self.decoder, config.decoder.lora)
        self.mtp = None
        if config.mtp is not None and config.mtp.n_branches > 0:
            self.mtp = MTPHead(
                config.mtp,
                dim=config.decoder.hidden_size,
                n_heads=dec_hf["num_attention_heads"],
                intermediate_size=dec_hf["intermediate_size"] if "intermediate_size" in dec_hf else 4 * config.decoder.hidden_size,
                rope_theta=float(dec_hf.get("rope_theta", 10000.0)),
                eps=float(dec_hf.get("rms_norm_eps", 1e-6)),
            )
            init_weights(self.mtp)

    def _pretrained_decoder(self, init_new_rows: bool):
        """The decoder named by `config.decoder.source`, grown to the unified vocabulary."""
        from unisono.model.pretrained import load_base_decoder

        config, vocab = self.config.decoder, self.vocab
        decoder = load_base_decoder(config.source)
        rows = decoder.get_input_embeddings().num_embeddings
        if vocab.special_offset < rows:
            raise ValueError(
                f"the vocabulary puts its special tokens at id {vocab.special_offset}, inside the {rows} rows of the "
                f"base decoder {config.source}; set vocab.text_slots = {rows} (pretrained_config does)"
            )
        if decoder.config.hidden_size != config.hidden_size:
            raise ValueError(
                f"decoder.hf gives hidden_size {config.hidden_size} but {config.source} has {decoder.config.hidden_size}; "
                "build the DecoderConfig with unisono.model.pretrained.decoder_config_from_source"
            )
        decoder.resize_token_embeddings(vocab.size, mean_resizing=init_new_rows)
        self.base_vocab_rows = rows
        return decoder

    # ---- properties ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.decoder.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.get_input_embeddings().weight.dtype

    @property
    def is_moe(self) -> bool:
        return self.config.decoder.family == "qwen3_moe"

    @property
    def speech_codec(self):
        """The checkpoint's own speech codec (its speech/ folder), loaded on first use."""
        if self._speech_codec is None:
            from unisono.codec.codec import SpeechCodec

            if self.checkpoint_dir is None:
                raise ValueError("this model was not loaded from a checkpoint directory, so it has no speech/ codec; "
                                 "load one with unisono.codec.codec.SpeechCodec.load(path)")
            codec = SpeechCodec.load(self.checkpoint_dir / SPEECH_DIR, device=self.device)
            _check_codec_fits(codec.config.tokenizer.codebook_size, self.vocab, self.checkpoint_dir / SPEECH_DIR)
            object.__setattr__(self, "_speech_codec", codec)
        return self._speech_codec

    def merge_adapters(self) -> int:
        """Fold the decoder's LoRA adapters into its weights (inference pays nothing for them);
        the model can no longer be saved as a delta over its base. Returns the layers merged."""
        from unisono.model.adapters import merge_lora

        merged = merge_lora(self.decoder)
        self.adapters_merged = self.adapters_merged or merged > 0
        return merged

    # ---- audio -----------------------------------------------------------------------------
    def encode_audio(
        self,
        mel: torch.Tensor | None = None,  # (N, n_mels, T)
        mel_lengths: torch.Tensor | None = None,  # (N,)
        encoder_out: torch.Tensor | None = None,  # (N, T_enc, D_enc) if already encoded
        encoder_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adaptor outputs (N, T', D) in the decoder's space, and their lengths (N,)."""
        if encoder_out is None:
            if mel is None:
                raise ValueError("give either mel or encoder_out")
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.encoder.frozen):
                encoder_out, encoder_lengths = self.encoder(mel, mel_lengths)
        if encoder_lengths is None:
            encoder_lengths = torch.full((encoder_out.shape[0],), encoder_out.shape[1], device=encoder_out.device)
        return self.adaptor(encoder_out.to(self.dtype), encoder_lengths)

    # ---- decoder interface (used by unisono.decode.generate) ----------------------------------
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.get_input_embeddings()(ids)

    def embed_prompt(
        self,
        input_ids: torch.Tensor,  # (B, L)
        audio: torch.Tensor | None = None,  # (N, T', D) adaptor outputs
        audio_lengths: torch.Tensor | None = None,  # (N,)
    ) -> torch.Tensor:
        """Token embeddings with each `<|audio|>` span filled by its clip's adaptor frames."""
        embeds = self.embed_tokens(input_ids)  # (B, L, D)
        slots = input_ids == self.vocab.audio_id  # (B, L)
        n_slots = int(slots.sum())
        if audio is None:
            if n_slots:
                raise ValueError(f"the prompt has {n_slots} <|audio|> positions but no audio was given")
            return embeds
        frames = audio[torch.arange(audio.shape[1], device=audio.device)[None, :] < audio_lengths[:, None]]  # (n, D)
        if frames.shape[0] != n_slots:
            raise ValueError(
                f"the prompts hold {n_slots} <|audio|> positions but the audio gives {frames.shape[0]} frames; "
                "build prompts with Audio(n) where n is the adaptor length of each clip"
            )
        embeds = embeds.masked_scatter(slots[..., None], frames.to(embeds.dtype))
        return embeds

    def decoder_forward(
        self,
        embeds: torch.Tensor,  # (B, T, D)
        attention_mask: torch.Tensor,  # (B, S) over all cache slots, this step's included
        positions: torch.Tensor,  # (B, T)
        cache: Any,
    ) -> torch.Tensor:
        kwargs = {"output_router_logits": False} if self.is_moe else {}
        kwargs[_cache_keyword(type(self.decoder.model))] = cache
        out = self.decoder.model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=True,
            **kwargs,
        )
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() == 1:  # one position: an int8 (dynamically quantised) head needs a batch dimension
            return self.decoder.lm_head(hidden[None])[0]
        return self.decoder.lm_head(hidden)

    def head_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` (K,) of the output head's weight, (K, D) in floating point (an int8 head dequantised)."""
        head = self.decoder.lm_head  # bias-free in every decoder family used here
        weight = head.weight() if callable(head.weight) else head.weight
        if weight.is_quantized:
            weight = weight.dequantize()
        return weight.detach()[ids]

    def new_kv_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.decoder.config)

    # ---- training --------------------------------------------------------------------------
    def forward(self, batch: Batch, main: bool = True, mtp: bool = True, ctc_weight: float = 0.0) -> LossOutput:
        """Loss of a batch: next-token loss (if `main`) + weighted MTP branch losses (if `mtp`)
        + `ctc_weight` x the CTC loss of the adaptor frames (see `ctc_loss`)."""
        audio = lengths = None
        if batch.mel is not None or batch.encoder_out is not None:
            audio, lengths = self.encode_audio(batch.mel, batch.mel_lengths, batch.encoder_out, batch.encoder_lengths)
        embeds = self.embed_prompt(batch.input_ids, audio, lengths)
        mask = batch.attention_mask.bool()
        kwargs = {"output_router_logits": True} if self.is_moe else {}
        out = self.decoder.model(inputs_embeds=embeds, attention_mask=mask.long(), **kwargs)
        hidden = out.last_hidden_state  # (B, L, D)

        targets = batch.targets
        nxt = targets[:, 1:]  # position s predicts the target at s+1
        sel = nxt != -100
        main_logits = self.logits(hidden[:, :-1][sel])  # (N0, V)
        branch_logits, branch_targets = [], []
        if mtp and self.mtp is not None:
            for h, bh in enumerate(self.mtp(hidden, embeds, mask), start=1):
                t = targets[:, 1 + h :]
                s = t != -100
                branch_logits.append(self.logits(bh[:, : -(1 + h)][s]))
                branch_targets.append(t[s])
        decay = self.config.mtp.loss_weight_decay if self.config.mtp else 1.0
        # MTP stage 1 trains the branches alone: the main loss is logged, not learned from
        loss, logs = mtp_loss(main_logits, nxt[sel], branch_logits, branch_targets, decay, main_weight=1.0 if main else 0.0)
        aux = router_aux_loss(getattr(out, "router_logits", None), self.decoder, mask.long()) if self.is_moe else None
        if aux is not None and main:
            loss = loss + self.config.decoder.router_aux_loss_coef * aux
            logs["loss_router_aux"] = float(aux.detach())
        if ctc_weight > 0 and audio is not None:
            ctc = self.ctc_loss(audio, lengths, batch)
            if ctc is not None:
                loss = loss + ctc_weight * ctc
                logs["loss_ctc"] = float(ctc.detach())
        with torch.no_grad():
            logs["accuracy_main"] = float((main_logits.argmax(-1) == nxt[sel]).float().mean()) if sel.any() else 0.0
        logs["loss"] = float(loss.detach())
        return LossOutput(loss=loss, logs=logs)

    def ctc_loss(self, audio: torch.Tensor, lengths: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """CTC loss of the adaptor frames read through the model's own output head (final norm,
        then the text rows of lm_head; `<|audio|>` is the blank) against each clip's transcript.

        An auxiliary loss for training a fresh decoder, as hybrid CTC/attention ASR does: it
        makes every adaptor frame say which text token it carries, so the decoder learns to
        read the audio instead of first learning a text-only language model. No parameters of
        its own: nothing is added to the checkpoint. Clips of rows that hold exactly one audio
        span and a text answer (ASR rows) are scored; other rows are skipped (None if none)."""
        spans = (batch.input_ids == self.vocab.audio_id).any(dim=1)  # rows holding an audio span
        if int(spans.sum()) != audio.shape[0]:  # several clips in a row: no clip-to-answer mapping
            return None
        n_text = self.vocab.n_text
        targets, target_lengths, keep = [], [], []
        for clip, row in enumerate(spans.nonzero().flatten().tolist()):
            t = batch.targets[row]
            t = t[(t >= 0) & (t < n_text)]  # the answer's text tokens (not <|end|> or speech)
            if t.numel() == 0:
                continue
            targets.append(t + 1)  # class 0 is the blank
            target_lengths.append(t.numel())
            keep.append(clip)
        if not keep:
            return None
        frames = self.decoder.model.norm(audio[keep])  # (N, T', D)
        head = self.decoder.lm_head.weight
        classes = torch.cat([head[self.vocab.audio_id : self.vocab.audio_id + 1], head[:n_text]])  # blank, text
        log_probs = torch.log_softmax((frames @ classes.T).float(), dim=-1).transpose(0, 1)  # (T', N, C)
        return nn.functional.ctc_loss(
            log_probs, torch.cat(targets), lengths[keep], torch.tensor(target_lengths, device=audio.device),
            blank=0, reduction="mean", zero_infinity=True,  # a clip too short for its text adds nothing
        )

    # ---- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path, dtype: torch.dtype | str | None = None) -> Path:
        """Write the checkpoint directory (atomically: a temporary folder renamed into place).
        `dtype`: the stored precision of floating tensors (None: as they are), or "int8" for
        int8 matrices with a scale per row (see `unisono.model.quantize.quantize_state`);
        `load` reads every form back into the dtype it is asked for."""
        from unisono.model.files import replace_directory
        from unisono.model.quantize import quantize_state

        if self.quantized:
            raise ValueError("an int8-quantised model is for inference; save the float checkpoint it was loaded from")
        if isinstance(dtype, str) and dtype != "int8":
            raise ValueError(f"dtype must be a torch floating dtype or 'int8', got {dtype!r}")
        state = self.state_dict()
        if self.config.encoder.source and self.config.encoder.frozen:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        if self.decoder.config.tie_word_embeddings:
            state.pop("decoder.lm_head.weight", None)  # shares storage with the input embeddings
        if self.config.decoder.source:
            if self.adapters_merged:
                raise ValueError("the adapters were merged into the base weights; save the model before merge_adapters()")
            state = stored_state(self, state)  # what training changed; the base stays in its source
        if dtype == "int8":
            state = quantize_state(state)
        else:
            state = {k: (v.to(dtype) if dtype and v.is_floating_point() else v) for k, v in state.items()}
        # the speech detokenizer and the model card placed beside the weights stay there; a model
        # that has speech tokens takes its own codec along where the folder has none (a model
        # fine-tuned from the embedded one must still speak)
        own_codec = self.checkpoint_dir / SPEECH_DIR if self.checkpoint_dir is not None else None
        with replace_directory(directory, keep=(SPEECH_DIR, "README.md")) as tmp:
            if self.vocab.n_speech and not (Path(directory) / SPEECH_DIR).is_dir():
                if own_codec is not None and own_codec.is_dir():
                    shutil.copytree(own_codec, tmp / SPEECH_DIR)
                elif self._speech_codec is not None:
                    self._speech_codec.save(tmp / SPEECH_DIR)
            save_file({k: v.contiguous() for k, v in state.items()}, tmp / WEIGHTS_FILE, metadata={"format": "unisono"})
            (tmp / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2))
            self.vocab.save(tmp, self.config.vocab.tokenizer_file, tokenizer_source=self._tokenizer_source())
        return Path(directory)

    def _tokenizer_source(self) -> str | None:
        """The decoder source whose tokenizer the vocabulary uses unchanged (then named, not copied)."""
        from unisono.model.pretrained import source_tokenizer

        source = self.config.decoder.source
        base = source_tokenizer(source) if source else None
        return source if base is not None and base.to_str() == self.vocab.tokenizer.to_str() else None

    @classmethod
    def load(
        cls,
        directory: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        compute_type: str = "float32",
        merge_adapters: bool = False,
    ) -> "Unisono":
        """Load a checkpoint directory (None: the embedded default model). `compute_type="int8"` quantises every Linear layer for
        CPU inference (see `unisono.model.quantize`). A decoder named by a source is read from
        it (the user cache) and the checkpoint's changes applied; `merge_adapters` folds LoRA
        adapters into the weights (int8 always does), for inference."""
        from unisono.model.quantize import COMPUTE_TYPES, dequantize_state, quantize_int8

        if compute_type not in COMPUTE_TYPES:
            raise ValueError(f"compute_type must be one of {', '.join(COMPUTE_TYPES)}, got {compute_type!r}")
        directory = default_model_path() if directory is None else Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(
                f"no unisono checkpoint at {directory}: {CONFIG_FILE} is missing "
                f"(a checkpoint directory holds {CONFIG_FILE}, {WEIGHTS_FILE} and tokenizer.json)"
            )
        config = UnisonoConfig.from_dict(json.loads(config_path.read_text()))
        vc = config.vocab
        tokenizer = None
        if config.decoder.source and not (directory / vc.tokenizer_file).is_file():
            from unisono.model.pretrained import base_tokenizer

            tokenizer = base_tokenizer(config.decoder.source)  # named by the checkpoint, not copied
        vocab = Vocab.load(directory, vc.tokenizer_file, vc.n_speech_tokens, layout=vc.layout,
                           special_slots=vc.special_slots, text_slots=vc.text_slots, tokenizer=tokenizer)
        _check_codec_config(directory / SPEECH_DIR, vocab)
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{directory}: {WEIGHTS_FILE} is missing")
        model = cls(config, vocab, init_new_rows=False)
        state = dequantize_state(load_file(weights))
        if config.decoder.source:
            state = apply_stored_state(model, state)  # the new vocabulary rows; the rest is the base's
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed_missing = {"decoder.lm_head.weight"} if model.decoder.config.tie_word_embeddings else set()
        if config.encoder.source and config.encoder.frozen:
            allowed_missing |= {k for k in missing if k.startswith("encoder.")}
        if config.decoder.source:
            allowed_missing |= {k for k in missing if is_base_weight(model, k)}
        bad = [k for k in missing if k not in allowed_missing]
        if bad or unexpected:
            raise ValueError(f"{weights} does not match its config: missing {bad[:5]}, unexpected {unexpected[:5]}")
        if model.decoder.config.tie_word_embeddings:
            model.decoder.tie_weights()
        model.checkpoint_dir = directory
        if merge_adapters or compute_type == "int8":
            model.merge_adapters()
        model = model.to(device=device, dtype=dtype).eval()
        if compute_type == "int8":
            model.requires_grad_(False)
            quantize_int8(model)
            model.quantized = True
        return model

    # ---- modes -----------------------------------------------------------------------------
    def transcribe(self, audio: Any, **kwargs: Any) -> "Transcript | list[Transcript]":
        """Speech to text. See `unisono.modes.asr.transcribe` for the options."""
        from unisono.modes.asr import transcribe

        return transcribe(self, audio, **kwargs)

    def speak(self, text: str, voice: Any = None, **kwargs: Any) -> "Speech":
        """Text to speech. See `unisono.modes.tts.speak` (kwargs: TTSOptions fields, scheduler)."""
        from unisono.modes.tts import TTSOptions, speak

        scheduler = kwargs.pop("scheduler", None)
        return speak(self, text, voice, TTSOptions(**kwargs), scheduler)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _check_layout(config: UnisonoConfig, vocab: Vocab) -> None:
    """The vocabulary must be laid out as the config records it (the ids of its rows depend on it)."""
    vc = config.vocab
    found = (vocab.layout, vocab.special_slots if vocab.layout == 2 else None, vocab.text_slots)
    wanted = (vc.layout, vc.special_slots if vc.layout == 2 else None, vc.text_slots or vocab.n_text)
    if found != wanted:
        raise ValueError(
            f"the vocabulary is laid out as (layout, special_slots, text_slots) = {found} but the config says {wanted}; "
            "build the Vocab from the config (unisono.model.unisono.build does)"
        )


def _check_codec_fits(codebook_size: int, vocab: Vocab, where: Path) -> None:
    if codebook_size != vocab.n_speech:
        raise ValueError(
            f"the speech codec at {where} has {codebook_size} codes but the vocabulary {vocab.n_speech} speech tokens: "
            "the codec does not belong to this model (re-export it with its own codec, or remap the speech rows "
            "with `unisono train export --remap-speech`)"
        )


def _check_codec_config(speech_dir: Path, vocab: Vocab) -> None:
    """Read the codec's codebook size from speech/config.json (no weights) and check it at load."""
    config_file = speech_dir / "config.json"
    if not config_file.is_file():
        return
    from unisono.codec.config import CodecConfig

    try:
        codec_config = CodecConfig.from_dict(json.loads(config_file.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{config_file} is not a speech codec config: {e}") from None
    _check_codec_fits(codec_config.tokenizer.codebook_size, vocab, speech_dir)


@functools.lru_cache(maxsize=None)
def _cache_keyword(decoder_class: type) -> str:
    """transformers 5 renamed the decoders' `past_key_values` argument to `cache` (the old name warns).
    Looked up once per class: decoding calls the decoder at every step."""
    import inspect

    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


def build(config: UnisonoConfig, texts_or_tokenizer: Any = None, **tokenizer_kwargs: Any) -> Unisono:
    """A fresh model. Its text tokenizer: `texts_or_tokenizer` (a tokenizers.Tokenizer, or texts to
    train a byte-level BPE on), else, for a decoder with a `source`, the source's own (and the
    vocabulary keeps every row of the source's embedding as a text row)."""
    from tokenizers import Tokenizer

    from unisono.model.vocab import train_text_tokenizer

    if isinstance(texts_or_tokenizer, Tokenizer):
        tok = texts_or_tokenizer
    elif texts_or_tokenizer is None and config.decoder.source:
        from unisono.model.pretrained import base_tokenizer, base_vocab_size

        tok = base_tokenizer(config.decoder.source)
        if config.vocab.text_slots is None:
            config.vocab.text_slots = base_vocab_size(config.decoder.source)
    else:
        tok = train_text_tokenizer(texts_or_tokenizer or [], **tokenizer_kwargs)
    return Unisono(config, Vocab.from_config(tok, config.vocab))


def default_model_path() -> Path:
    """The embedded default model shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "assets" / "unisono-tiny"

