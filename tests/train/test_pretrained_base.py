"""Stages on a pretrained base (`model.init: pretrained`): the model starts from a named decoder
with LoRA adapters, phases train the adaptor, the adapters and the new vocabulary rows only,
resume checkpoints hold only what trains, a killed run resumes exactly, and the result is a
delta checkpoint that loads back to the same logits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import SENTENCES
from tests.train.conftest import write_corpus
from unisono.train import checkpoint as ckpt
from unisono.train.config import StageConfig

pytest.importorskip("peft")

STEPS = (3, 3)  # align, then adaptor + adapters + new rows


def write_base(folder: Path) -> Path:
    """A tiny pretrained Llama with its own tokenizer, saved as a local transformers checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from unisono.model.vocab import train_text_tokenizer

    tokenizer = train_text_tokenizer(SENTENCES * 4, vocab_size=300, min_frequency=1)
    torch.manual_seed(1)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      tie_word_embeddings=True))
    lm.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def stage_dict(base: Path, manifest: Path, checkpoint_every: int = 2) -> dict:
    return {
        "stage": "align",
        "model": {"init": "pretrained", "pretrained": {
            "decoder": str(base), "encoder": "bundled:whisper-tiny.en",
            "lora": {"rank": 4, "alpha": 8.0}, "mtp": {"n_branches": 2, "intermediate_size": 64},
            "adaptor": {"stride": 4, "hidden_size": 64}}},
        "data": {"train": [str(manifest)], "tasks": {"asr": 1.0}, "max_tokens": 400},
        "run": {"seed": 5, "checkpoint_every": checkpoint_every, "keep_checkpoints": 2, "threads": 1},
        "phases": [
            {"name": "align", "steps": STEPS[0], "trainable": ["adaptor.*"], "lr": 2e-3},
            {"name": "sft", "steps": STEPS[1], "trainable": ["adaptor.*", "*lora_*", "new_rows"], "lr": 5e-3,
             "ctc_weight": 0.3},
        ],
    }


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def losses(run: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in rows]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import yaml

    folder = tmp_path_factory.mktemp("pretrained")
    base = write_base(folder / "base")
    manifest = write_corpus(folder / "corpus", n=6)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(stage_dict(base, manifest)))
    return folder, base, manifest, config


def test_config_needs_both_init_pretrained_and_its_section(setup):
    _, base, manifest, _ = setup
    d = stage_dict(base, manifest)
    assert StageConfig.from_dict(d).model.pretrained.lora == {"rank": 4, "alpha": 8.0}
    for broken in ({"init": "pretrained"}, {"init": "unisono-test", "pretrained": {"decoder": str(base)}},
                   {"init": "pretrained", "pretrained": {"decoder": ""}},
                   {"init": "pretrained", "pretrained": {"decoder": str(base), "rank": 4}}):
        with pytest.raises(ValueError, match="pretrained"):
            StageConfig.from_dict({**d, "model": broken})


def test_trainable_patterns_on_a_base(setup):
    from unisono.model.delta import is_base_weight
    from unisono.train.model_setup import initial_model, set_trainable

    _, base, manifest, _ = setup
    model = initial_model(StageConfig.from_dict(stage_dict(base, manifest)).model, [])
    names = set_trainable(model, ["adaptor.*", "*lora_*", "new_rows"])
    assert any("lora_A" in n for n in names) and any(n.startswith("adaptor.") for n in names)
    assert "decoder.model.embed_tokens.weight" in names
    assert not any(is_base_weight(model, n) for n in names if "embed_tokens" not in n)
    # the base's rows get no gradient, the new rows do
    model.decoder.get_input_embeddings().weight.sum().backward()
    grad = model.decoder.get_input_embeddings().weight.grad
    assert grad[: model.base_vocab_rows].abs().sum() == 0 and grad[model.base_vocab_rows:].abs().sum() > 0
    # a pattern reaching base weights is refused before any step, with the way out named
    with pytest.raises(ValueError, match="model.pretrained.tuned"):
        set_trainable(model, ["decoder.*"])
    with pytest.raises(ValueError, match="model.pretrained.tuned"):
        set_trainable(model, ["decoder.model.embed_tokens.*"])


@pytest.mark.slow
def test_killed_run_resumes_identically_and_exports_a_delta_checkpoint(setup):
    from unisono.model.unisono import Unisono
    from unisono.train.trainer import Trainer

    folder, base, manifest, config_path = setup
    reference, killed = folder / "reference", folder / "killed"
    config = StageConfig.from_dict(stage_dict(base, manifest))
    trainer = Trainer(config, reference, progress=False)
    trainer.run()
    trained = trainer.model.eval()

    # the run's init and result name the base and its tokenizer instead of copying them
    for d in (reference / "init", reference / "model"):
        assert json.loads((d / "config.json").read_text())["decoder"]["source"] == str(base)
        assert not (d / "tokenizer.json").exists()

    # the exported delta checkpoint loads back (the base from its source) to the trained model's logits
    loaded = Unisono.load(reference / "model")
    batch = trainer.objective.stream(trained, 1, config.phases[1], seed=0).batch(0)
    with torch.no_grad():
        a = trained(batch, mtp=False).loss
        b = loaded(batch, mtp=False).loss
        ids = batch.input_ids[:1]
        logits_a = trained.logits(trained.decoder.model(inputs_embeds=trained.embed_tokens(ids)).last_hidden_state)
        logits_b = loaded.logits(loaded.decoder.model(inputs_embeds=loaded.embed_tokens(ids)).last_hidden_state)
    torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=1e-6)
    assert float(b) == pytest.approx(float(a), abs=1e-6)
    # the new rows trained, the base's rows did not move
    base_lm = __import__("transformers").AutoModelForCausalLM.from_pretrained(base)
    rows = loaded.base_vocab_rows
    table = loaded.decoder.get_input_embeddings().weight
    assert torch.equal(table[:rows], base_lm.get_input_embeddings().weight)
    init_table = Unisono.load(reference / "init").decoder.get_input_embeddings().weight
    assert not torch.equal(table[rows:], init_table[rows:])

    # resume checkpoints hold the trained parameters only: adaptor, adapters, the new rows
    last = ckpt.latest_checkpoint(reference)
    saved = ckpt.load_tensors(last, "model.pt")
    assert saved and all(k.startswith("adaptor.") or "lora_" in k or k.startswith("decoder.new_rows.") for k in saved)
    assert saved["decoder.new_rows.embed_tokens"].shape[0] == table.shape[0] - rows
    full = sum(v.numel() for v in trained.state_dict().values())
    assert sum(v.numel() for v in saved.values()) < 0.5 * full
    moments = ckpt.load_tensors(last, "optim.pt")["optimizer"]["state"]
    # the model at the last checkpoint (how a run still training is evaluated) is the exported one
    from unisono.train.backbone import model_at_checkpoint

    at = model_at_checkpoint(reference).state_dict()
    assert all(torch.equal(at[k], v) for k, v in loaded.state_dict().items())
    table_moments = [e for k, e in moments.items() if k in ("decoder.model.embed_tokens.weight", "decoder.lm_head.weight")]
    assert len(table_moments) == 1
    assert table_moments[0]["exp_avg"].shape == (table.shape[0] - rows, table.shape[1])

    # killed after its checkpoint at step 4 (inside the second phase), resumed: the same run
    cmd = [sys.executable, "-m", "unisono.cli", "train", "align", "--config", str(config_path), "--out", str(killed)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (ckpt.checkpoint_path(killed, 4) / ckpt.STATE_FILE).is_file():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "model").exists()
    resumed = subprocess.run(cmd + ["--resume"], env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(killed) == losses(reference)
    assert [s for s, _, _ in losses(killed)] == list(range(1, sum(STEPS) + 1))
    a, b = loaded.state_dict(), Unisono.load(killed / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
