"""Fixtures of tests/model: a tiny quantised GGUF decoder written here, so the GGUF path is tested
offline in seconds (the real packages are exercised by the slow tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TINY_GGUF_GEOMETRY = dict(hidden=64, ffn=128, layers=2, heads=4, kv_heads=2)


def write_tiny_gguf(path: Path, tokenizer, seed: int = 0) -> Path:
    """A 2-layer Llama GGUF with llama.cpp's names and quantisations (Q8_0 embeddings, Q4_1
    projections, F32 norms) and the byte-level BPE `tokenizer` as a gpt2 tokenizer."""
    gguf = pytest.importorskip("gguf")
    from gguf import GGMLQuantizationType as Q

    g = TINY_GGUF_GEOMETRY
    model = json.loads(tokenizer.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(g["layers"])
    writer.add_context_length(256)
    writer.add_embedding_length(g["hidden"])
    writer.add_feed_forward_length(g["ffn"])
    writer.add_head_count(g["heads"])
    writer.add_head_count_kv(g["kv_heads"])
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(g["hidden"] // g["heads"])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    rng = np.random.default_rng(seed)

    def tensor(name: str, shape: tuple[int, ...], qtype) -> None:
        data = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if qtype == Q.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    d, f, kv = g["hidden"], g["ffn"], g["hidden"] // g["heads"] * g["kv_heads"]
    tensor("token_embd.weight", (len(tokens), d), Q.Q8_0)
    for i in range(g["layers"]):
        tensor(f"blk.{i}.attn_norm.weight", (d,), Q.F32)
        tensor(f"blk.{i}.ffn_norm.weight", (d,), Q.F32)
        tensor(f"blk.{i}.attn_q.weight", (d, d), Q.Q4_1)
        tensor(f"blk.{i}.attn_k.weight", (kv, d), Q.Q4_1)
        tensor(f"blk.{i}.attn_v.weight", (kv, d), Q.Q4_1)
        tensor(f"blk.{i}.attn_output.weight", (d, d), Q.Q4_1)
        tensor(f"blk.{i}.ffn_gate.weight", (f, d), Q.Q4_1)
        tensor(f"blk.{i}.ffn_up.weight", (f, d), Q.Q4_1)
        tensor(f"blk.{i}.ffn_down.weight", (d, f), Q.Q4_1)
    tensor("output_norm.weight", (d,), Q.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_tokenizer) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q4_1.gguf", tiny_tokenizer)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """An empty user cache for the test."""
    from unisono.model.cache import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"
