"""The micro-batch stream: deterministic, every row once an epoch, within the token budget, audio
positions that fit the model, filters and tiers, broken clips, cached encoder features, SpecAugment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import make_tiny_model
from tests.train.conftest import write_corpus
from unisono.train.config import DataConfig, SpecAugmentConfig
from unisono.train.data import Corpus, StageData
from unisono.train.specaugment import spec_augment


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer)


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory, real_speech_train_dir) -> Path:
    """Tone clips and three real training clips (AN4)."""
    return write_corpus(tmp_path_factory.mktemp("mixed"), n=8, real_dir=real_speech_train_dir / "an4_train", n_real=3)


def stream(model, manifest, **cfg) -> StageData:
    tasks = cfg.pop("tasks", {"asr": 1.0})
    config = DataConfig(train=[str(manifest)], tasks=tasks, **{"max_tokens": 200, **cfg})
    return StageData(Corpus.load(config.train), model.vocab, config, seed=1, n_mels=model.config.encoder.n_mels,
                     adaptor_stride=model.config.adaptor.stride)


def test_the_stream_is_a_function_of_seed_and_position(model, corpus):
    a, b = stream(model, corpus), stream(model, corpus)
    for g in (3, 0, 7, 20):  # any order: no hidden state
        x, y = a.batch(g), b.batch(g)
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.targets, y.targets) and torch.equal(x.mel, y.mel)
    other = StageData(a.corpus, model.vocab, a.config, seed=2)
    assert [other.plan(0)] != [a.plan(0)]


def test_each_epoch_draws_every_row_once_within_the_token_budget(model, mixed_corpus):
    data = stream(model, mixed_corpus, max_tokens=160, max_batch_size=3)
    n = len(data.corpus.rows)
    for epoch in range(3):
        rows = [r for batch in data.plan(epoch) for r, _, _ in batch]
        assert sorted(rows) == list(range(n))  # invariant: each row exactly once
    assert data.plan(0) != data.plan(1)
    g = 0
    for epoch in range(2):
        for k in range(len(data.plan(epoch))):
            assert data.locate(g) == (epoch, k)  # epochs follow each other in the stream
            batch = data.batch(g)
            B, L = batch.input_ids.shape
            assert B <= 3 and (B == 1 or B * L <= 160)
            g += 1


def test_audio_positions_fit_the_model_and_targets_are_the_transcripts(model, mixed_corpus):
    data = stream(model, mixed_corpus, language_token_prob=0.0)
    vocab = model.vocab
    for g in range(4):
        batch = data.batch(g)
        _, lengths = model.encode_audio(batch.mel, batch.mel_lengths)
        assert (batch.input_ids == vocab.audio_id).sum(1).tolist() == lengths.tolist()
        epoch, k = data.locate(g)
        for b, (row, _, _) in enumerate(data.plan(epoch)[k]):
            target = batch.targets[b][batch.targets[b] != -100].tolist()
            assert target == vocab.encode_text(data.corpus.rows[row].text) + [vocab.end_id]
        out = model(batch)  # placeholders and frames agree, or this raises
        assert torch.isfinite(out.loss)


def test_filters_and_tiers(model, corpus):
    rows = Corpus.load([corpus]).rows
    only_en = stream(model, corpus, languages=["en"])
    assert {rows[i].language for i in only_en.eligible} == {"en"}
    good = stream(model, corpus, min_quality=0.5)
    assert all(rows[i].meta["quality"] >= 0.5 for i in good.eligible) and len(good.eligible) < len(rows)
    short = stream(model, corpus, max_duration_s=0.75)
    assert all(rows[i].duration <= 0.75 for i in short.eligible)
    gold = stream(model, corpus, tiers="cooldown")  # the data engine's mix: gold and rover; here only gold
    drawn = [r for batch in gold.plan(0) for r, _, _ in batch]
    assert drawn and {rows[r].meta["tier"] for r in drawn} == {"gold"}
    with pytest.raises(ValueError, match="no training row"):
        stream(model, corpus, languages=["fr"])


def test_task_mix_follows_weights_over_the_tasks_a_row_allows(model, corpus, tmp_path):
    data = stream(model, corpus, tasks={"asr": 1.0, "tts": 1.0, "s2s": 1.0, "continue": 1.0, "text": 1.0})
    counts: dict[str, int] = {}
    for epoch in range(10):
        for batch in data.plan(epoch):
            for row, task, _ in batch:
                counts[task] = counts.get(task, 0) + 1
                assert task in data.feasible[row]
    assert set(counts) == {"asr", "tts", "s2s", "continue", "text"}
    # rows without speech tokens can only be transcribed or read
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(
        json.dumps({k: v for k, v in json.loads(line).items() if k != "speech_tokens"}) + "\n"
        for line in corpus.read_text().splitlines()
    ).replace('"audio": "wav/', f'"audio": "{corpus.parent}/wav/'))
    data = stream(model, plain, tasks={"asr": 1.0, "tts": 1.0})
    assert all(t == ["asr"] for t in data.feasible.values())


def test_a_broken_clip_is_trained_as_text_and_counted(model, corpus, tmp_path):
    lines = corpus.read_text().splitlines()
    (tmp_path / "wav").mkdir()
    (tmp_path / "wav" / "bad.wav").write_bytes(b"RIFF not really audio")
    rows = [json.loads(line) for line in lines[:3]]
    for r in rows:
        r["audio"] = str(corpus.parent / r["audio"])
    rows[1]["audio"] = "wav/bad.wav"
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    data = stream(model, manifest, max_tokens=10_000)
    batch = data.batch(0)
    assert data.failed_clips == 1 and batch.input_ids.shape[0] == 3 and batch.mel.shape[0] == 2
    bad = [b for b, (row, _, _) in enumerate(data.plan(0)[0]) if row == 1][0]
    assert not (batch.input_ids[bad] == model.vocab.audio_id).any() and model.vocab.id("text") in batch.input_ids[bad]
    assert torch.isfinite(model(batch).loss)


def test_cached_encoder_features_give_the_loss_of_on_the_fly_audio(model, corpus, tmp_path):
    from unisono.train.features import FeatureStore, build_feature_store, manifest_clips

    rows = Corpus.load([corpus]).rows
    store = build_feature_store(model.encoder, manifest_clips([r.__dict__ for r in rows], corpus.parent), tmp_path / "store",
                                batch_seconds=2.0, shard_clips=3)
    assert len(store) == len(rows) and len(list((tmp_path / "store").glob("shard-*.safetensors"))) >= 2
    again = build_feature_store(model.encoder, manifest_clips([r.__dict__ for r in rows], corpus.parent), tmp_path / "store")
    assert len(again) == len(rows)  # a second run adds nothing

    cached, live = stream(model, corpus, features=str(tmp_path / "store")), stream(model, corpus)
    for g in range(3):
        x, y = cached.batch(g), live.batch(g)
        assert x.mel is None and x.encoder_out.dtype == torch.float16
        assert torch.equal(x.input_ids, y.input_ids)
        with torch.no_grad():
            torch.testing.assert_close(model(x).loss, model(y).loss, rtol=2e-3, atol=2e-3)
    import pickle

    assert len(pickle.loads(pickle.dumps(FeatureStore(tmp_path / "store")))) == len(rows)  # DataLoader workers


def test_spec_augment_masks_bands_within_limits():
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=0.1)
    x = torch.randn(80, 300) + 5.0
    g = torch.Generator().manual_seed(0)
    y = spec_augment(x, cfg, g, length=250)
    assert torch.equal(x[:, 250:], y[:, 250:])  # padding untouched
    changed = x != y
    masked_rows = changed[:, :250].all(1).sum()
    masked_cols = changed[:, :250].all(0).sum()
    assert masked_rows <= 2 * 10 and masked_cols <= 2 * 25
    assert changed.any() and torch.allclose(y[changed], x[:, :250].mean().expand(int(changed.sum())))
    z = spec_augment(x, cfg, torch.Generator().manual_seed(0), length=250)
    assert torch.equal(y, z)  # seeded: the same masks again
    assert torch.equal(spec_augment(x, SpecAugmentConfig(prob=0.0), g), x)


def test_worker_processes_deliver_the_same_stream(model, corpus):
    from unisono.train.data import loader

    data = stream(model, corpus, specaugment=SpecAugmentConfig())
    local = loader(data, start=1, stride=2, num_workers=0)
    workers = loader(data, start=1, stride=2, num_workers=1)
    for _ in range(3):
        x, y = next(local), next(workers)  # micro-batches 1, 3, 5 of the stream
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.mel, y.mel)
