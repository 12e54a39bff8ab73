"""`unisono train STAGE` and `unisono train features` from the command line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.train.conftest import stage_overrides
from unisono.cli import app

runner = CliRunner()


def plain(output: str) -> str:
    """The words of a CLI message, with rich's panel borders and line wrapping removed."""
    return " ".join(output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def test_every_stage_is_a_command():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for stage in ("align", "pretrain", "cooldown", "sft-asr", "mtp", "features"):
        assert stage in result.output


def test_bad_overrides_and_mismatched_configs_are_refused(tmp_path):
    from unisono.train.config import default_config_path

    result = runner.invoke(app, ["train", "align", "--set", "phases.0.lr=fast", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "must be a number" in plain(result.output)
    result = runner.invoke(app, ["train", "mtp", "--config", str(default_config_path("align")), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "configures stage 'align'" in plain(result.output)
    result = runner.invoke(app, ["train", "align", "--set", f"data.train=[{tmp_path}/none.jsonl]", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "does not exist" in plain(result.output)


@pytest.mark.slow
def test_align_then_features_then_sft_from_the_command_line(corpus, tmp_path):
    sets = [x for s in stage_overrides("align", corpus) for x in ("--set", s)]
    result = runner.invoke(app, ["train", "align", "--out", str(tmp_path / "align"), *sets])
    assert result.exit_code == 0, result.output
    model = tmp_path / "align" / "model"
    assert (model / "config.json").is_file()

    # cache the encoder of that model, then fine-tune on the cached frames
    result = runner.invoke(app, ["train", "features", str(corpus), "--out", str(tmp_path / "feats"), "--encoder", str(model)])
    assert result.exit_code == 0, result.output
    sets = [x for s in stage_overrides("sft-asr", corpus, init=str(model), extra=(f"data.features={tmp_path / 'feats'}",))
            for x in ("--set", s)]
    result = runner.invoke(app, ["train", "sft-asr", "--out", str(tmp_path / "sft"), *sets])
    assert result.exit_code == 0, result.output
    from unisono.model.unisono import Unisono

    stages = Unisono.load(tmp_path / "sft" / "model").config.meta["stages"]
    assert [s["stage"] for s in stages] == ["align", "sft-asr"]  # the model carries its history


def test_export_writes_a_float16_checkpoint_with_grown_speech_tokens(tiny_tokenizer, tmp_path):
    import torch
    from safetensors import safe_open
    from tests.conftest import make_tiny_model

    from unisono.model.unisono import Unisono

    model = make_tiny_model(tiny_tokenizer)
    model.save(tmp_path / "run" / "model")
    n_speech = model.vocab.n_speech + 16
    result = runner.invoke(app, ["train", "export", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--speech-tokens", str(n_speech)])
    assert result.exit_code == 0, result.output
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    exported = Unisono.load(tmp_path / "out")
    assert exported.vocab.n_speech == n_speech
    # text rows are kept through the growth, up to float16 rounding
    old, new = model.decoder.get_input_embeddings().weight, exported.decoder.get_input_embeddings().weight
    keep = model.vocab.speech_offset
    assert torch.allclose(old[:keep], new[:keep], atol=1e-2)

    result = runner.invoke(app, ["train", "export", str(tmp_path / "run"), "--out", str(tmp_path / "x"), "--dtype", "int4"])
    assert result.exit_code == 2


def test_export_remaps_the_speech_rows_onto_a_new_codebook_and_keeps_int8_text_rows_bit_for_bit(tiny_tokenizer, tmp_path):
    import numpy as np
    import torch
    from safetensors.torch import load_file
    from tests.conftest import make_tiny_model

    from unisono.model.unisono import Unisono

    model = make_tiny_model(tiny_tokenizer)
    model.save(tmp_path / "run" / "model")
    first = ["train", "export", str(tmp_path / "run"), "--out", str(tmp_path / "a"), "--dtype", "int8"]
    assert runner.invoke(app, first).exit_code == 0
    n_old = model.vocab.n_speech
    old_tokens = np.random.default_rng(0).integers(0, n_old, 300)
    np.save(tmp_path / "old.npy", old_tokens)
    np.save(tmp_path / "new.npy", old_tokens * 3 + np.arange(300) % 3)  # each old code split in three
    result = runner.invoke(app, ["train", "export", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--dtype", "int8",
                                 "--remap-speech", str(tmp_path / "old.npy"), str(tmp_path / "new.npy")])
    assert result.exit_code == 0, result.output
    assert Unisono.load(tmp_path / "b").vocab.n_speech == 3 * n_old
    a, b = load_file(tmp_path / "a/model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    keep = model.vocab.speech_offset
    embed = [k for k in a if "embed_tokens" in k]
    assert embed and all(torch.equal(a[k][:keep], b[k][:keep]) for k in embed)  # re-quantised text rows: the same bytes
    assert all(torch.equal(a[k], b[k]) for k in a if k not in embed)
    # tokens of a codebook the model does not have are refused
    np.save(tmp_path / "wide.npy", old_tokens + n_old)
    refused = runner.invoke(app, ["train", "export", str(tmp_path / "a"), "--out", str(tmp_path / "c"),
                                  "--remap-speech", str(tmp_path / "wide.npy"), str(tmp_path / "new.npy")])
    assert refused.exit_code == 2 and not (tmp_path / "c").exists()
    (tmp_path / "junk.npy").write_text("not an array")
    for old in ("junk.npy", "missing.npy"):
        unread = runner.invoke(app, ["train", "export", str(tmp_path / "a"), "--out", str(tmp_path / "c"),
                                     "--remap-speech", str(tmp_path / old), str(tmp_path / "new.npy")])
        assert unread.exit_code == 2 and "cannot read the tokens" in unread.output and not (tmp_path / "c").exists()


def test_export_int8_with_a_recorded_draft_count(tiny_tokenizer, tmp_path):
    from safetensors import safe_open
    from tests.conftest import make_tiny_model

    from unisono.model.unisono import Unisono

    make_tiny_model(tiny_tokenizer).save(tmp_path / "run" / "model")
    result = runner.invoke(app, ["train", "export", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--dtype", "int8", "--drafts", "3"])
    assert result.exit_code == 0, result.output
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert "I8" in {f.get_slice(k).get_dtype() for k in f.keys()}
    assert Unisono.load(tmp_path / "out").config.mtp.default_drafts == 3
    result = runner.invoke(app, ["train", "export", str(tmp_path / "run"), "--out", str(tmp_path / "y"), "--drafts", "9"])
    assert result.exit_code == 2 and "MTP branches" in plain(result.output)
