"""The trainer's parts: LR schedule, router annealing, checkpoint files, vocabulary expansion,
trainable sets; and the whole loop: a tiny batch is learned, bf16 autocast runs."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import make_tiny_model
from tests.train.conftest import write_corpus
from unisono.model.vocab import Special, Speech, Turn
from unisono.train import checkpoint as ckpt
from unisono.train.config import PhaseConfig, StageConfig
from unisono.train.model_setup import expand_speech_vocabulary, param_groups, remap_speech_vocabulary, set_trainable
from unisono.train.backbone import router_coef
from unisono.train.trainer import RunExistsError, Trainer, lr_factor


def test_lr_schedule_warms_up_then_decays():
    p = PhaseConfig("p", steps=10, trainable=["*"], warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_factor(s, p) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_factor(6, p) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay: cos = 0
    assert lr_factor(10, p) == pytest.approx(0.1)
    lin = PhaseConfig("p", steps=10, trainable=["*"], schedule="linear", min_lr_ratio=0.0)
    assert lr_factor(5, lin) == pytest.approx(0.5)
    assert lr_factor(7, PhaseConfig("p", steps=10, trainable=["*"], schedule="constant")) == 1.0


def test_router_coefficient_is_annealed_linearly():
    p = PhaseConfig("p", steps=5, trainable=["*"], router_aux_coef=(0.02, 0.0))
    assert [router_coef(s, p) for s in range(5)] == pytest.approx([0.02, 0.015, 0.01, 0.005, 0.0])
    assert router_coef(3, PhaseConfig("p", steps=5, trainable=["*"])) is None


def test_checkpoints_are_complete_or_invisible(tmp_path):
    state = {"w": torch.arange(3.0)}
    for step in (2, 4, 6):
        ckpt.write_checkpoint(tmp_path, step, state, {"o": 1}, [ckpt.rng_state()], {"phase": 0}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000004", "step-00000006"]
    # an interrupted write: a hidden temporary folder, and a folder without its state file
    (tmp_path / "checkpoints" / ".step-00000008.tmp-12").mkdir()
    (tmp_path / "checkpoints" / "step-00000010").mkdir()
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000006"
    assert [p.name for p in ckpt.remove_partial(tmp_path)] == [".step-00000008.tmp-12"]
    assert ckpt.read_state(ckpt.latest_checkpoint(tmp_path)) == {"phase": 0, "step": 6}
    assert torch.equal(ckpt.load_tensors(ckpt.latest_checkpoint(tmp_path), "model.pt")["w"], state["w"])


def test_rng_state_round_trip():
    ckpt.seed_everything(5)
    saved = ckpt.rng_state()
    a = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    ckpt.set_rng_state(saved)
    b = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_vocabulary_expansion_keeps_text_and_special_rows(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, vocab__n_speech_tokens=0)
    old_vocab = model.vocab
    keep = old_vocab.speech_offset
    rows = model.embed_tokens(torch.arange(keep)).detach().clone()
    expand_speech_vocabulary(model, 100)
    assert model.vocab.n_speech == 100 and model.config.vocab.n_speech_tokens == 100
    assert model.vocab.size >= keep + 100 and model.vocab.size % 64 == 0
    assert model.vocab.speech_offset == keep and model.vocab.id("asr") == old_vocab.id("asr")
    assert torch.equal(model.embed_tokens(torch.arange(keep)), rows)
    new = model.embed_tokens(torch.arange(keep, model.vocab.size)).detach()
    assert (new - rows.mean(0)).abs().max() < 0.2  # near the mean of the existing rows
    assert model.decoder.lm_head.weight.data_ptr() == model.decoder.get_input_embeddings().weight.data_ptr()
    turns = [Turn("user", [Special("tts"), "hello"]), Turn("assistant", [Speech((0, 99))])]
    ids = torch.tensor([model.vocab.encode_prompt(turns).ids])
    assert model.logits(model.decoder.model(input_ids=ids).last_hidden_state).shape[-1] == model.vocab.size
    assert expand_speech_vocabulary(model, 50).vocab.n_speech == 100  # never shrinks


def test_remapping_the_speech_vocabulary_keeps_every_text_logit_and_no_new_speech_logit_beats_the_old(tiny_tokenizer):
    import numpy as np

    model = make_tiny_model(tiny_tokenizer, vocab__n_speech_tokens=16)
    keep = model.vocab.speech_offset
    old_speech = model.embed_tokens(torch.arange(keep, keep + 16)).detach().clone()
    ids = torch.tensor([model.vocab.encode_prompt([Turn("user", [Special("asr"), "hello there"])]).ids])
    before = model.logits(model.decoder.model(input_ids=ids).last_hidden_state).detach()
    rng = np.random.default_rng(0)
    old_tokens = rng.integers(0, 16, 500)
    new_tokens = old_tokens * 4 + rng.integers(0, 4, 500)  # each old token split in four, as a larger codebook would
    new_tokens[:50] = rng.integers(8, 64, 50)  # and some frames change side (none into new tokens 0-7)
    agreement = remap_speech_vocabulary(model, old_tokens, new_tokens, 64)
    assert model.vocab.n_speech == 64 and model.config.vocab.n_speech_tokens == 64 and model.vocab.speech_offset == keep
    assert 0.85 < agreement < 1.0
    assert model.decoder.lm_head.weight.data_ptr() == model.decoder.get_input_embeddings().weight.data_ptr()
    after = model.logits(model.decoder.model(input_ids=ids).last_hidden_state).detach()
    assert torch.equal(after[..., :keep], before[..., :keep])  # text and special logits untouched
    assert (after[..., keep:keep + 64].max(-1).values <= before[..., keep:keep + 16].max(-1).values + 1e-5).all()
    new_rows = model.embed_tokens(torch.arange(keep, keep + 64)).detach()
    assert set(old_tokens[new_tokens == 5]) == {1}  # new token 5 took frames of old token 1 alone: its row
    assert torch.allclose(new_rows[5], old_speech[1])


def test_trainable_sets_and_weight_decay_groups(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    names = set_trainable(model, ["*"])  # everything, except the frozen encoder
    assert names and not any(n.startswith("encoder.") for n in names)
    set_trainable(model, ["mtp.*"])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {n for n, _ in model.named_parameters() if n.startswith("mtp.")}
    with pytest.raises(ValueError, match="no parameter matches"):
        set_trainable(model, ["nothing.*"])
    set_trainable(model, ["decoder.*"])
    decay, no_decay = param_groups(model, 0.1)
    names_of = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 for p in decay["params"])
    assert "decoder.model.embed_tokens.weight" in {names_of[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_an_earlier_run_is_not_overwritten(tmp_path):
    ckpt.write_checkpoint(tmp_path, 3, {}, {}, [], {"phase": 0})
    cfg = StageConfig.from_dict({"stage": "align", "phases": [{"name": "a", "steps": 1, "trainable": ["adaptor.*"]}]})
    with pytest.raises(RunExistsError, match="--resume"):
        Trainer(cfg, tmp_path, progress=False).run()


def _tiny_run(tmp_path, corpus, steps, lr, precision="fp32", accumulation=1) -> list[dict]:
    cfg = StageConfig.from_dict({
        "stage": "sft-asr",
        "model": {"init": "unisono-test", "tokenizer_vocab_size": 300},
        "data": {"train": [str(corpus)], "max_tokens": 10_000, "language_token_prob": 0.0},
        "run": {"precision": precision, "checkpoint_every": 1000, "threads": 1, "accumulation": accumulation},
        "phases": [{"name": "fit", "steps": steps, "trainable": ["adaptor.*", "decoder.*"], "lr": lr, "schedule": "constant"}],
    })
    Trainer(cfg, tmp_path / f"run-{precision}", progress=False).run()
    return [json.loads(x) for x in (tmp_path / f"run-{precision}" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_tiny_batch_is_learned(tmp_path):
    corpus = write_corpus(tmp_path / "c", n=2)  # two clips, one batch: the same batch every step
    rows = _tiny_run(tmp_path, corpus, steps=40, lr=5e-3)
    first, last = rows[0]["loss_main"], rows[-1]["loss_main"]
    assert last < 0.2 * first, (first, last)
    assert rows[-1]["accuracy_main"] > 0.9
    assert (tmp_path / "run-fp32" / "tb").is_dir() and list((tmp_path / "run-fp32" / "tb").glob("events.*"))


@pytest.mark.slow
def test_bf16_autocast_trains(tmp_path):
    corpus = write_corpus(tmp_path / "c", n=2)
    rows = _tiny_run(tmp_path, corpus, steps=6, lr=3e-3, precision="bf16")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert rows[-1]["loss_main"] < rows[0]["loss_main"]
