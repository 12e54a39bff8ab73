"""`unisono eval text`: the base decoder with its adapters off is exactly the installed base (its
loss against transformers' own), fresh adapters change nothing, trained ones change the text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import SENTENCES

pytest.importorskip("peft")

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny instruct-style Llama base: transformers weights, its tokenizer and a chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from unisono.model.vocab import train_text_tokenizer

    folder = tmp_path_factory.mktemp("base")
    tokenizer = train_text_tokenizer(SENTENCES * 4, vocab_size=300, min_frequency=1)
    torch.manual_seed(1)
    LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 tie_word_embeddings=True)).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "chat_template": CHAT_TEMPLATE}))
    return folder


def model_on(base: Path):
    from unisono.model.config import LoRAConfig, MTPConfig
    from unisono.model.pretrained import pretrained_config
    from unisono.model.unisono import build

    return build(pretrained_config(str(base), lora=LoRAConfig(rank=4, alpha=8.0), mtp=MTPConfig(n_branches=1)))


def items():
    from unisono.eval.text_ability import TextItem

    return [TextItem("a", "passage", SENTENCES[0]), TextItem("b", "passage", SENTENCES[1]),
            TextItem("q", "prompt", "hello there")]


def test_adapters_off_is_the_installed_base_and_fresh_adapters_change_nothing(base):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from unisono.eval.text_ability import TextAbilityEval, same_replies

    model = model_on(base)
    evaluator = TextAbilityEval(model)
    off = evaluator.measure(items(), "base", adapters_on=False, max_new_tokens=6)
    on = evaluator.measure(items(), "fresh", max_new_tokens=6)
    # the reference: transformers' own model and tokenizer on the same passages
    reference, tok = LlamaForCausalLM.from_pretrained(base).eval(), AutoTokenizer.from_pretrained(base)
    nll = count = 0
    with torch.no_grad():
        for text in SENTENCES[:2]:
            ids = tok(text, return_tensors="pt").input_ids
            nll += float(reference(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    assert off.tokens == count
    print("DIFF", off.nats_per_token, nll / count)
    assert off.nats_per_token >= nll / count - 1e-5
    assert on.nats_per_token == pytest.approx(off.nats_per_token, abs=1e-6)  # lora_B starts at zero
    assert same_replies(off, on) == 1 and set(on.replies) == {"q"}

    with torch.no_grad():  # "trained" adapters
        for name, p in model.decoder.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    changed = evaluator.measure(items(), "trained", max_new_tokens=6)
    assert abs(changed.nats_per_token - off.nats_per_token) > 1e-3
    again = evaluator.measure(items(), "base again", adapters_on=False, max_new_tokens=6)
    assert again.nats_per_token == pytest.approx(off.nats_per_token, abs=1e-6)  # switched back on afterwards


def test_a_model_without_a_base_or_adapters_is_refused_and_bad_rows_are_named(base, tmp_path, tiny_tokenizer):
    from tests.conftest import make_tiny_model
    from unisono.eval.text_ability import TextAbilityEval, adapters, read_text_items

    with pytest.raises(ValueError, match="from scratch"):
        TextAbilityEval(make_tiny_model(tiny_tokenizer))
    plain = model_on(base)
    from unisono.model.adapters import merge_lora

    merge_lora(plain.decoder)
    with pytest.raises(ValueError, match="no adapters"):
        with adapters(plain.decoder, False):
            pass
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"id": "x", "kind": "passage", "text": "fine"}\n{"id": "y", "kind": "poem", "text": "no"}\n')
    with pytest.raises(ValueError, match="line 2.*kind"):
        read_text_items(bad)


def test_the_command_reports_both_sides(base, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from unisono.cli import app

    model_on(base).save(tmp_path / "m")
    texts = tmp_path / "t.jsonl"
    texts.write_text('{"id": "a", "kind": "passage", "text": "the cat sat on the mat"}\n'
                     '{"id": "q", "kind": "prompt", "text": "hello"}\n')
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["eval", "text", "--model", str(tmp_path / "m"), "--prompts", str(texts),
                                      "--max-new-tokens", "4", "--threads", "1", "--report", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [r["name"].split(" ")[0] for r in report["results"]] == ["base", str(tmp_path / "m")]
    assert report["same_replies"] == 1  # fresh adapters
    assert "perplexity" in (tmp_path / "r" / "README.md").read_text()
    bad = CliRunner().invoke(app, ["eval", "text", "--model", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
