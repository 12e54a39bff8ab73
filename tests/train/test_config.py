"""Stage configs: the shipped ones follow the report's recipe; overrides and bad input."""

from __future__ import annotations

import pytest

from unisono.train.config import STAGES, StageConfig, apply_override, default_config_path, load_config


def test_shipped_configs_follow_the_recipe():
    cfgs = {s: load_config(default_config_path(s)) for s in STAGES}
    assert all(c.stage == s for s, c in cfgs.items())
    # alignment: the adaptor alone, on ASR
    assert [p.trainable for p in cfgs["align"].phases] == [["adaptor.*"]]
    assert cfgs["align"].data.tasks == {"asr": 1.0}
    # pretraining: vocabulary expansion, the unified mix, warm-up then main with the router loss annealed
    pre = cfgs["pretrain"]
    assert pre.model.speech_tokens and set(pre.data.tasks) == {"asr", "tts", "continue", "s2s", "text"}
    assert [p.name for p in pre.phases] == ["warmup", "main"]
    start, end = pre.phases[1].router_aux_coef
    assert end < start
    assert not any("self_attn" in t for t in pre.phases[0].trainable) and "decoder.*" in pre.phases[1].trainable
    # cool-down: highest tiers, longer sequences, instructive TTS
    cool = cfgs["cooldown"]
    assert cool.data.tiers == "cooldown" and cool.data.max_tokens > pre.data.max_tokens and "tts-instruct" in cool.data.tasks
    # ASR SFT: SpecAugment, cosine LR, encoder never listed
    sft = cfgs["sft-asr"]
    assert sft.data.specaugment is not None and sft.phases[0].schedule == "cosine"
    assert not any(t.startswith("encoder") for p in sft.phases for t in p.trainable)
    # MTP: branches alone without the main loss, then jointly at a lower LR
    b, j = cfgs["mtp"].phases
    assert b.trainable == ["mtp.*"] and (b.main_loss, b.mtp_loss) == (False, True)
    assert j.main_loss and j.mtp_loss and j.lr < b.lr and "decoder.*" in j.trainable


def test_overrides_reach_nested_fields_and_lists():
    cfg = load_config(default_config_path("mtp"), ["phases.1.lr=1e-6", "data.train=[a.jsonl, b.jsonl]", "run.seed=7",
                                                   "data.specaugment={time_masks: 3}"])
    assert cfg.phases[1].lr == 1e-6 and cfg.data.train == ["a.jsonl", "b.jsonl"] and cfg.run.seed == 7
    assert cfg.data.specaugment.time_masks == 3 and cfg.data.specaugment.freq_masks == 2  # defaults kept
    d = {"a": [{"b": 1}]}
    apply_override(d, "a.0.c.d=x")
    assert d == {"a": [{"b": 1, "c": {"d": "x"}}]}
    assert StageConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()  # round trip


@pytest.mark.parametrize(
    "change, message",
    [
        (["stage=finetune"], "stage must be one of"),
        (["phases=[]"], "no phases"),
        (["phases.0.trainable=[]"], "lists no parameters"),
        (["phases.0.main_loss=false"], "enable main_loss"),
        (["data.tokens=5"], r"unknown key\(s\) \['tokens'\] in `data`"),
        (["oops=1"], "unknown top-level"),
        (["run.accumulation=0"], "accumulation must be"),
        (["phases.0.steps=0"], "steps must be >= 1"),
    ],
)
def test_bad_configs_say_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        load_config(default_config_path("align"), change)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="configs"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ValueError, match="a mapping"):
        load_config(bad)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_config(default_config_path("align"), ["nonsense"])


def test_numbers_in_yaml_1_1_spelling_are_numbers():
    # YAML 1.1 reads `1e-4` (no dot) as a string; a learning rate must still be a float
    cfg = load_config(default_config_path("align"), ["phases.0.lr=3e-4", "run.seed='5'", "data.max_tokens=2e3"])
    assert cfg.phases[0].lr == 3e-4 and cfg.run.seed == 5 and cfg.data.max_tokens == 2000
    assert isinstance(cfg.data.max_tokens, int)
    with pytest.raises(ValueError, match="must be a number"):
        load_config(default_config_path("align"), ["phases.0.lr=fast"])
