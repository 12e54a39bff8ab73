"""Each shipped stage config, shrunk to a tiny model and a few steps: the right parameters (and only
those) change, the vocabulary grows where it should, and the losses are the ones the stage asks for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.train.conftest import N_SPEECH, stage_overrides
from unisono.model.unisono import Unisono
from unisono.train import checkpoint as ckpt
from unisono.train.config import default_config_path, load_config
from unisono.train.trainer import Trainer

pytestmark = pytest.mark.slow


def run_stage(stage: str, manifest: Path, out: Path, **kwargs) -> Path:
    cfg = load_config(default_config_path(stage), stage_overrides(stage, manifest, **kwargs))
    return Trainer(cfg, out, progress=False).run()


def weights(path: Path) -> dict[str, torch.Tensor]:
    if path.name.startswith(ckpt.PREFIX):
        return ckpt.load_tensors(path, "model.pt")
    return dict(Unisono.load(path).state_dict())


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in after.items() if k in before and before[k].shape == v.shape and not torch.equal(before[k], v)}


def group(names: set[str], prefix: str) -> set[str]:
    return {n for n in names if n.startswith(prefix)}


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def aligned(corpus, tmp_path_factory) -> Path:
    return run_stage("align", corpus, tmp_path_factory.mktemp("runs") / "align")


def test_align_trains_the_adaptor_alone(aligned):
    run = aligned.parent
    before, after = weights(run / "init"), weights(aligned)
    diff = changed(before, after)
    adaptor = {k for k in before if k.startswith("adaptor.")}
    assert diff == adaptor, f"changed outside the adaptor: {sorted(diff - adaptor)[:5]}"
    assert Unisono.load(aligned).vocab.n_speech == 0  # speech tokens come with pretraining
    assert [m["step"] for m in metrics(run)] == [1, 2]


def test_pretrain_expands_the_vocabulary_then_warms_up_and_trains_everything(aligned, corpus, tmp_path):
    out = tmp_path / "pretrain"
    model_dir = run_stage("pretrain", corpus, out, init=str(aligned), extra=("run.checkpoint_every=2", "run.keep_checkpoints=0"))
    start, expanded = Unisono.load(aligned), Unisono.load(out / "init")
    assert (start.vocab.n_speech, expanded.vocab.n_speech) == (0, N_SPEECH)
    keep = start.vocab.speech_offset  # text and special rows keep their ids and embeddings
    assert expanded.vocab.speech_offset == keep and expanded.vocab.encode_text("the fox") == start.vocab.encode_text("the fox")
    torch.testing.assert_close(expanded.embed_tokens(torch.arange(keep)), start.embed_tokens(torch.arange(keep)), rtol=0, atol=0)
    assert expanded.vocab.size >= keep + N_SPEECH

    init, warm, final = weights(out / "init"), weights(ckpt.checkpoint_path(out, 2)), weights(model_dir)
    warm_diff = changed(init, warm)
    assert group(warm_diff, "adaptor.") and "decoder.model.embed_tokens.weight" in warm_diff
    assert group(warm_diff, "decoder.model.layers.0.mlp.")
    assert not {n for n in warm_diff if ".self_attn." in n or ".input_layernorm" in n}, "attention trained during warm-up"
    assert not group(warm_diff, "encoder.") | group(warm_diff, "mtp.")
    main_diff = changed(warm, final)
    assert {n for n in main_diff if ".self_attn." in n}, "the main phase trains attention too"
    assert [m["phase"] for m in metrics(out)] == ["warmup", "warmup", "main", "main"]


def test_pretrain_anneals_the_router_loss_of_an_moe_decoder(corpus, tmp_path):
    moe = ("model.overrides={decoder__family: qwen3_moe, decoder__num_experts: 4, decoder__num_experts_per_tok: 2, "
           "decoder__moe_intermediate_size: 64, decoder__decoder_sparse_step: 1}")
    out = tmp_path / "moe"
    run_stage("pretrain", corpus, out, steps=3, extra=(moe,))
    rows = [m for m in metrics(out) if m["phase"] == "main"]
    # shipped: 0.01 -> 0.001, linear over the phase's steps
    assert [round(m["router_aux_coef"], 6) for m in rows] == [0.01, 0.0055, 0.001]
    for m in rows:  # the loss holds the router term with the step's coefficient
        assert m["loss_router_aux"] > 0
        assert m["loss"] == pytest.approx(m["loss_main"] + m["router_aux_coef"] * m["loss_router_aux"], rel=1e-4)
    assert any(n.endswith(".mlp.gate.weight") for n in changed(weights(out / "init"), weights(out / "model")))


def test_cooldown_trains_adaptor_and_decoder_on_the_best_rows(corpus, tmp_path):
    out = tmp_path / "cooldown"
    run_stage("cooldown", corpus, out, extra=("data.tiers=cooldown", "data.min_quality=0.5"))
    diff = changed(weights(out / "init"), weights(out / "model"))
    assert group(diff, "adaptor.") and group(diff, "decoder.model.layers.")
    assert not group(diff, "encoder.") and not group(diff, "mtp.")


def test_sft_asr_keeps_the_encoder_frozen_and_masks_the_input(aligned, corpus, tmp_path):
    out = tmp_path / "sft"
    cfg = load_config(default_config_path("sft-asr"), stage_overrides("sft-asr", corpus, init=str(aligned)))
    assert cfg.data.specaugment is not None and cfg.data.tasks == {"asr": 1.0}
    Trainer(cfg, out, progress=False).run()
    before, after = weights(out / "init"), weights(out / "model")
    diff = changed(before, after)
    assert diff == group(diff, "adaptor.") | group(diff, "decoder.")
    assert group(diff, "adaptor.") == {k for k in before if k.startswith("adaptor.")}
    assert {n for n in diff if ".self_attn." in n}


def test_mtp_trains_branches_alone_then_jointly(corpus, tmp_path):
    out = tmp_path / "mtp"
    run_stage("mtp", corpus, out, extra=("run.checkpoint_every=2", "run.keep_checkpoints=0"))
    init, branches, joint = weights(out / "init"), weights(ckpt.checkpoint_path(out, 2)), weights(out / "model")
    first = changed(init, branches)
    assert first == {k for k in init if k.startswith("mtp.")}, f"stage 1 changed {sorted(first - group(first, 'mtp.'))[:5]}"
    second = changed(branches, joint)
    assert group(second, "mtp.") and group(second, "decoder.") and group(second, "adaptor.")

    decay = Unisono.load(out / "model").config.mtp.loss_weight_decay
    for m in metrics(out):
        branch_sum = sum(decay**h * m[f"loss_mtp{h}"] for h in range(1, 6) if f"loss_mtp{h}" in m)
        assert "loss_mtp1" in m
        main = 0.0 if m["phase"] == "branches" else m["loss_main"]  # stage 1: the main loss is only logged
        assert m["loss"] == pytest.approx(main + branch_sum, rel=1e-4)
