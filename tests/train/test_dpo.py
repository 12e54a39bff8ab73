"""DPO on the one Trainer: the batches score only the answers, the first loss is log 2, a resumed run is exact."""

from __future__ import annotations

import json
import math

import pytest
import torch

from unisono.train.config import PhaseConfig, RunConfig
from unisono.train.dpo import DPOConfig, DPOObjective, PairStream, encode_answer, read_pairs


def write_pairs(path, n: int = 6) -> str:
    rows = []
    for i in range(n):
        rows.append({"id": f"p{i}", "prompt": {"id": f"p{i}", "text": f"Sentence number {i}.", "instruct": None},
                     "chosen": [i, i + 1, i + 2], "rejected": [7, 7, 7, 7, i], "margin": 0.5 + i / 10})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def model():
    from unisono.model.unisono import Unisono

    return Unisono.load()


def test_a_batch_scores_the_answers_only(model, tmp_path):
    pairs = read_pairs([write_pairs(tmp_path / "p.jsonl")])
    stream = PairStream(pairs, model.vocab, 2, seed=0)
    a, b = stream.batch(3), stream.batch(3)
    assert torch.equal(a.input_ids, b.input_ids)  # a pure function of (seed, g)
    vocab = model.vocab
    for row in range(4):
        ids, scored = a.input_ids[row], a.targets[row]
        n = int(a.attention_mask[row].sum())
        codes = vocab.speech_codes(scored[scored != -100].tolist())
        side = "chosen" if row < 2 else "rejected"
        pair = next(p for p in pairs if encode_answer(vocab, p["prompt"], p[side])[0] == ids[:n].tolist())
        assert codes == pair[side]
        assert scored[scored != -100].tolist()[-2:] == [vocab.id("speech_end"), vocab.end_id]
    assert a.margin.shape == (2,)


def test_dpo_starts_at_log2_and_resumes_exactly(tmp_path):
    from unisono.model.unisono import default_model_path
    from unisono.train.trainer import Trainer

    pairs = write_pairs(tmp_path / "p.jsonl")

    def config(steps):
        return DPOConfig(init=str(default_model_path()), pairs=[pairs], beta=0.5, pairs_per_batch=2,
                         run=RunConfig(checkpoint_every=2, precision="fp32", threads=2, log_every=1),
                         phases=[PhaseConfig(name="dpo", steps=steps, trainable=["decoder.*"], lr=1e-4, warmup_steps=0,
                                             schedule="constant")])

    straight = tmp_path / "straight"
    Trainer(config(4), straight, objective=DPOObjective(config(4)), progress=False).run()
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # the policy is the reference
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["reward_accuracy"] == 1.0
    resumed = tmp_path / "resumed"

    def kill_after_step_3(row):
        if row["step"] == 3:
            raise KeyboardInterrupt  # killed after the step-2 checkpoint

    with pytest.raises(KeyboardInterrupt):
        Trainer(config(4), resumed, objective=DPOObjective(config(4)), progress=False, on_step=kill_after_step_3).run()
    assert not (resumed / "model").exists()
    Trainer(config(4), resumed, objective=DPOObjective(config(4)), progress=False, resume=True).run()
    again = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    assert [r["loss"] for r in again] == pytest.approx([r["loss"] for r in rows], abs=1e-6)
    assert (straight / "model" / "config.json").is_file()
    meta = json.loads((straight / "model" / "config.json").read_text())["meta"]["stages"][-1]
    assert meta["stage"] == "dpo-tts" and meta["beta"] == 0.5


def test_broken_pairs_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": {"text": "hi"}, "chosen": [1], "rejected": []}\n')
    with pytest.raises(ValueError, match="line 1: not a preference pair"):
        read_pairs([str(bad)])
    with pytest.raises(ValueError, match="loss_type"):
        DPOObjective(DPOConfig(init="x", pairs=[write_pairs(tmp_path / "p.jsonl")], loss_type="kto"))


def write_chat_pairs(path, clip: str, n: int = 3) -> str:
    rows = [{"id": f"c{i}", "prompt": {"id": f"c{i}", "text": "Where do you live?", "audio": clip,
                                        "persona": "You are Ava.", "history": [["user", "Hi."], ["assistant", "Hello."]]},
             "chosen": f"I live in Oslo, number {i}.", "rejected": "" if i == 0 else "Lists: one, two, three.",
             "margin": 0.3} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_chat_pairs_are_scored_in_the_chat_tasks_format_with_the_turns_audio(model, tmp_path, example_wav):
    # a chat pair's row is the `chat` training example of that turn and reply; its log-probability is
    # the model's own on that example, the spoken turn encoded into the prompt
    import numpy as np

    from unisono.audio.io import load_audio
    from unisono.data.manifest import Utterance
    from unisono.train.data import audio_positions
    from unisono.train.preference import model_logps
    from unisono.train.tasks import TaskContext, build_example

    pairs = read_pairs([write_chat_pairs(tmp_path / "c.jsonl", str(example_wav))])  # an empty rejected reply is a pair
    stream = PairStream(pairs, model.vocab, 1, seed=0, stride=model.config.adaptor.stride)
    batch = stream.batch(0)
    pair = next(p for p in pairs if p["chosen"] == model.vocab.decode_text(
        [t for t in batch.targets[0].tolist() if t != -100][:-1]))
    n_audio = audio_positions(len(load_audio(example_wav)), model.config.adaptor.stride)
    row = Utterance("u", str(example_wav), "Where do you live?", "en", 1.0, meta={"dialogue": {
        "persona": "You are Ava.", "history": pair["prompt"]["history"], "reply": pair["chosen"]}})
    example = build_example("chat", TaskContext(row, [], n_audio, np.random.default_rng(0)), model.vocab, 0)
    n = int(batch.attention_mask[0].sum())
    assert batch.input_ids[0, :n].tolist() == example.ids
    assert batch.targets[0, example.target_start:n].tolist() == example.ids[example.target_start:]
    with torch.no_grad():
        logps = model_logps(model, batch.input_ids, batch.attention_mask, batch.targets, batch.mel, batch.mel_lengths)
        # by hand: the chosen row alone, its clip encoded, the answer's log-probabilities summed
        feats, lengths = model.encode_audio(batch.mel[:1], batch.mel_lengths[:1])
        ids = batch.input_ids[:1, :n]
        logits = model.logits(model.decoder.model(inputs_embeds=model.embed_prompt(ids, feats, lengths)).last_hidden_state)
        logp = torch.log_softmax(logits[0, :-1].float(), -1)
        by_hand = sum(float(logp[i - 1, ids[0, i]]) for i in range(example.target_start, n))
    assert float(logps[0]) == pytest.approx(by_hand, abs=1e-3)
