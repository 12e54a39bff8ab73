"""A checkpoint on a pretrained base stores only what training changed, and loads back exactly."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open

from tests.model.test_unisono import _asr_batch
from unisono.model.config import LoRAConfig, UnisonoConfig
from unisono.model.delta import NEW_EMBED_ROWS, NEW_HEAD_ROWS, train_only_new_rows
from unisono.model.pretrained import decoder_config_from_source
from unisono.model.unisono import Unisono, build

pytest.importorskip("peft")


def _base_dir(tmp_path, n_text: int, tied: bool = True):
    """A tiny pretrained Llama saved as a local transformers checkpoint: the base."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=n_text, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied))
    lm.save_pretrained(tmp_path / "base")
    return tmp_path / "base", lm


def _model_on_base(tiny_tokenizer, base_dir, lora: LoRAConfig | None = LoRAConfig(rank=4, alpha=8.0), **decoder_fields):
    config = UnisonoConfig.from_name("unisono-test")
    config.decoder = decoder_config_from_source(str(base_dir), lora=lora, **decoder_fields)
    config.vocab.text_slots = tiny_tokenizer.get_vocab_size()
    torch.manual_seed(0)
    return build(config, tiny_tokenizer)


def _train_step(model: Unisono, batch) -> None:
    """One step of what a stage on a pretrained base trains: adaptor, MTP head, adapters, new rows."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("adaptor.", "mtp.")) or "lora_" in name)
    train_only_new_rows(model)
    if model.config.decoder.tuned:
        model.decoder.model.norm.weight.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    model(batch).loss.backward()
    optimizer.step()
    model.eval()


def _stored(path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.mark.parametrize("tied", [True, False])
def test_checkpoint_holds_only_what_training_changed_and_loads_identically(tiny_tokenizer, tmp_path, tied):
    n_text = tiny_tokenizer.get_vocab_size()
    base_dir, base = _base_dir(tmp_path, n_text, tied)
    model = _model_on_base(tiny_tokenizer, base_dir)
    batch = _asr_batch(model)
    _train_step(model, batch)
    embed = model.decoder.get_input_embeddings().weight
    assert torch.equal(embed[:n_text], base.get_input_embeddings().weight)  # the text rows did not move
    assert not torch.equal(model.decoder.model.layers[0].self_attn.q_proj.lora_B.default.weight, torch.zeros(64, 4))

    model.save(tmp_path / "ckpt")
    stored = _stored(tmp_path / "ckpt")
    decoder_keys = {k for k in stored if k.startswith("decoder.")}
    rows = model.vocab.size - n_text
    assert stored[NEW_EMBED_ROWS] == (rows, 64)
    assert (NEW_HEAD_ROWS in stored) == (not tied) and (tied or stored[NEW_HEAD_ROWS] == (rows, 64))
    assert all("lora_" in k for k in decoder_keys - {NEW_EMBED_ROWS, NEW_HEAD_ROWS})
    n_adapted = 2 * 7  # 2 layers x q, k, v, o, gate, up, down
    assert len(decoder_keys) == 2 * n_adapted + 1 + (not tied)
    assert all(k.startswith(("adaptor.", "mtp.", "encoder.", "decoder.")) for k in stored)
    # the file is the stored tensors and a header: no base weight hides in it
    stored_bytes = sum(4 * torch.Size(s).numel() for s in stored.values())
    assert (tmp_path / "ckpt" / "model.safetensors").stat().st_size < stored_bytes + 32_000
    base_bytes = sum(4 * p.numel() for p in base.parameters())
    assert sum(4 * torch.Size(s).numel() for k, s in stored.items() if k in decoder_keys) < base_bytes / 2

    again = Unisono.load(tmp_path / "ckpt")
    assert again.base_vocab_rows == n_text and again.config.decoder.source == str(base_dir)
    with torch.no_grad():
        torch.testing.assert_close(again(batch).loss, model(batch).loss, rtol=0, atol=0)
        ids = torch.randint(0, model.vocab.size, (2, 9), generator=torch.Generator().manual_seed(3))
        hidden = model.decoder.model(inputs_embeds=model.embed_tokens(ids)).last_hidden_state
        hidden_again = again.decoder.model(inputs_embeds=again.embed_tokens(ids)).last_hidden_state
        torch.testing.assert_close(again.logits(hidden_again), model.logits(hidden), rtol=0, atol=0)


def test_a_changed_base_weight_is_refused_unless_tuned(tiny_tokenizer, tmp_path):
    base_dir, _ = _base_dir(tmp_path, tiny_tokenizer.get_vocab_size())
    model = _model_on_base(tiny_tokenizer, base_dir, lora=None)
    with torch.no_grad():
        model.decoder.model.norm.weight.add_(0.5)  # trained in full, outside any adapter
    with pytest.raises(ValueError, match=r"changed 1 weights of the base decoder \(model.norm.weight\)"):
        model.save(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()

    model = _model_on_base(tiny_tokenizer, base_dir, lora=None, tuned=["model.norm.*"])
    batch = _asr_batch(model)
    _train_step(model, batch)
    model.save(tmp_path / "ckpt")
    assert "decoder.model.norm.weight" in _stored(tmp_path / "ckpt")
    again = Unisono.load(tmp_path / "ckpt")
    torch.testing.assert_close(again.decoder.model.norm.weight, model.decoder.model.norm.weight, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(again(batch).loss, model(batch).loss, rtol=0, atol=0)


def test_int8_storage_and_merged_adapters(tiny_tokenizer, tmp_path):
    base_dir, _ = _base_dir(tmp_path, tiny_tokenizer.get_vocab_size())
    model = _model_on_base(tiny_tokenizer, base_dir)
    batch = _asr_batch(model)
    _train_step(model, batch)
    model.save(tmp_path / "int8", dtype="int8")
    with torch.no_grad():
        loss = float(model(batch).loss)
        assert abs(float(Unisono.load(tmp_path / "int8")(batch).loss) - loss) < 0.05
        merged = Unisono.load(tmp_path / "int8", merge_adapters=True)
        assert merged.adapters_merged and "lora_" not in " ".join(n for n, _ in merged.named_parameters())
        assert abs(float(merged(batch).loss) - loss) < 0.05
    with pytest.raises(ValueError, match="adapters were merged"):
        merged.save(tmp_path / "again")


def test_merging_adapters_computes_the_same(tiny_tokenizer, tmp_path):
    base_dir, _ = _base_dir(tmp_path, tiny_tokenizer.get_vocab_size())
    model = _model_on_base(tiny_tokenizer, base_dir)
    batch = _asr_batch(model)
    _train_step(model, batch)
    with torch.no_grad():
        before = model(batch).loss
        assert model.merge_adapters() == 14
        torch.testing.assert_close(model(batch).loss, before, rtol=1e-5, atol=1e-5)


def test_a_missing_base_is_a_clear_error(tiny_tokenizer, tmp_path):
    from unisono.model.sources import SourceError

    base_dir, _ = _base_dir(tmp_path, tiny_tokenizer.get_vocab_size())
    _model_on_base(tiny_tokenizer, base_dir).save(tmp_path / "ckpt")
    shutil.rmtree(base_dir)
    with pytest.raises(SourceError, match="no transformers checkpoint there"):
        Unisono.load(tmp_path / "ckpt")


def test_special_tokens_inside_the_base_rows_are_refused(tiny_tokenizer, tmp_path):
    from unisono.model.vocab import Vocab

    base_dir, _ = _base_dir(tmp_path, tiny_tokenizer.get_vocab_size() + 40)  # more rows than the tokenizer has
    config = UnisonoConfig.from_name("unisono-test")
    config.decoder = decoder_config_from_source(str(base_dir))
    with pytest.raises(ValueError, match=r"inside the 340 rows of the base decoder .*text_slots = 340"):
        Unisono(config, Vocab.from_config(tiny_tokenizer, config.vocab))


def test_the_base_tokenizer_is_named_not_copied(tiny_tokenizer, tmp_path):
    import json

    base_dir, _ = _base_dir(tmp_path, tiny_tokenizer.get_vocab_size())
    tiny_tokenizer.save(str(base_dir / "tokenizer.json"))  # the base ships its tokenizer
    config = UnisonoConfig.from_name("unisono-test")
    config.decoder = decoder_config_from_source(str(base_dir))
    model = build(config)  # no texts: the source's tokenizer and all its rows
    assert model.vocab.text_slots == model.base_vocab_rows == tiny_tokenizer.get_vocab_size()
    model.save(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "tokenizer.json").exists()
    assert json.loads((tmp_path / "ckpt" / "vocab.json").read_text())["tokenizer"] == str(base_dir)
    again = Unisono.load(tmp_path / "ckpt")
    assert again.vocab.encode_text("the quick brown fox") == tiny_tokenizer.encode("the quick brown fox").ids
    assert again.vocab.speech_offset == model.vocab.speech_offset
