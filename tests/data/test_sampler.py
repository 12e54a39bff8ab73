from collections import Counter

import numpy as np
import pytest
import torch

from unisono.audio.io import save_audio
from unisono.data.manifest import Utterance
from unisono.data.sampler import (
    BatchConfig,
    StageMix,
    TokenBudgetBatchSampler,
    estimate_duration_buckets,
    estimate_tokens,
    make_loader,
    tier_draws,
)


def corpus(counts: dict[str, int], seed: int = 0) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    out = []
    for tier, n in counts.items():
        for k in range(n):
            d = float(rng.uniform(0.5, 20.0))
            out.append(Utterance(f"{tier}-{k}", f"{tier}-{k}.wav", "word " * int(d * 2.5), "en", round(d, 3),
                                 meta={"tier": tier, "quality": float(rng.uniform(0, 1))}))
    return out


MIX = StageMix("test", {"gold": 0.5, "silver": 0.3, "synthetic": 0.2})


def test_each_tier_gets_its_share_of_the_epoch():
    utts = corpus({"gold": 100, "silver": 300, "synthetic": 20, "bronze": 50})
    draws = tier_draws(utts, MIX, 200, np.random.default_rng(0))
    tiers = Counter(utts[i].meta["tier"] for i in draws)
    assert tiers == {"gold": 100, "silver": 60, "synthetic": 40}  # bronze is not in the stage
    per_clip = Counter(draws)
    # gold: 100 draws from 100 clips, without replacement -> each exactly once
    assert all(per_clip[i] == 1 for i, u in enumerate(utts) if u.meta["tier"] == "gold")
    # synthetic: 40 draws from 20 clips -> oversampled, each exactly twice
    assert all(per_clip[i] == 2 for i, u in enumerate(utts) if u.meta["tier"] == "synthetic")
    # silver: 60 of 300, none twice
    assert max(per_clip[i] for i, u in enumerate(utts) if u.meta["tier"] == "silver") == 1


def test_missing_tiers_are_renormalised_away_and_an_empty_stage_is_refused():
    utts = corpus({"gold": 30, "silver": 30})
    draws = tier_draws(utts, MIX, 80, np.random.default_rng(0))
    tiers = Counter(utts[i].meta["tier"] for i in draws)
    assert tiers == {"gold": 50, "silver": 30}  # 0.5 : 0.3 of 80
    with pytest.raises(ValueError, match="none of them has clips"):
        tier_draws(corpus({"bronze": 5}), MIX, None, np.random.default_rng(0))


def test_stage_filters_language_length_and_quality():
    utts = corpus({"gold": 200})
    utts[0] = utts[0].replace(language="zh")
    stage = StageMix("s", {"gold": 1.0}, languages=("en",), max_duration_s=10.0, min_quality=0.5)
    draws = tier_draws(utts, stage, None, np.random.default_rng(0))
    assert draws and 0 not in draws
    assert all(utts[i].duration <= 10.0 and utts[i].meta["quality"] >= 0.5 for i in draws)


def test_batches_respect_the_token_budget_and_stay_in_one_duration_bucket():
    utts = corpus({"gold": 150, "silver": 150})
    cfg = BatchConfig(max_tokens=2000, num_buckets=6)
    sampler = TokenBudgetBatchSampler(utts, MIX, cfg)
    batches = sampler.batches()
    tokens = [estimate_tokens(u, cfg) for u in utts]
    for b in batches:
        assert len(b) * max(tokens[i] for i in b) <= cfg.max_tokens or len(b) == 1
    # every draw is in exactly one batch
    drawn = sorted(i for b in batches for i in b)
    assert drawn == sorted(tier_draws(utts, MIX, None, np.random.default_rng(cfg.seed)))
    # bucketing: the batches' duration spread is far below that of random batches of the same sizes
    spread = np.mean([np.ptp([utts[i].duration for i in b]) for b in batches if len(b) > 1])
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(drawn)
    sizes = [len(b) for b in batches]
    cuts = np.cumsum(sizes)[:-1]
    random_spread = np.mean([np.ptp([utts[i].duration for i in b]) for b in np.split(shuffled, cuts) if len(b) > 1])
    assert spread < 0.5 * random_spread


def test_epochs_are_seeded():
    utts = corpus({"gold": 80, "silver": 80})
    s = TokenBudgetBatchSampler(utts, MIX, BatchConfig(max_tokens=1500))
    e0 = s.batches()
    assert s.batches() == e0  # same epoch, same batches
    s.set_epoch(1)
    e1 = s.batches()
    assert e1 != e0
    assert len(s) == len(e1)


def test_oversized_clip_gets_its_own_batch():
    utts = corpus({"gold": 10})
    utts[3] = utts[3].replace(duration=600.0)
    s = TokenBudgetBatchSampler(utts, StageMix("s", {"gold": 1.0}, max_duration_s=1e9), BatchConfig(max_tokens=1000))
    batches = s.batches()
    assert [3] in batches
    assert sorted(i for b in batches for i in b) == list(range(10))


def test_duration_bucket_edges_are_quantiles():
    edges = estimate_duration_buckets(np.arange(1, 101, dtype=float), 4)
    np.testing.assert_allclose(edges, np.quantile(np.arange(1, 101), [0.25, 0.5, 0.75]))


def test_dataloader_yields_padded_batches_and_skips_unreadable_clips(tmp_path):
    rng = np.random.default_rng(0)
    utts = []
    for k, d in enumerate([0.5, 0.7, 1.1, 1.2, 2.0]):
        save_audio(tmp_path / f"c{k}.wav", (0.1 * rng.standard_normal(int(d * 16000))).astype(np.float32), 16000)
        utts.append(Utterance(f"c{k}", f"c{k}.wav", "hello there", "en", d, meta={"tier": "gold"}))
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    utts.append(Utterance("bad", "bad.wav", "x", "en", 1.0, meta={"tier": "gold"}))
    loader = make_loader(utts, StageMix("s", {"gold": 1.0}), BatchConfig(max_tokens=60, num_buckets=2), roots=tmp_path)
    seen = []
    for batch in loader:
        assert batch["audio"].dtype == torch.float32 and batch["audio"].ndim == 2
        assert batch["audio"].shape[1] == int(batch["audio_lengths"].max())
        for row, n in zip(batch["audio"], batch["audio_lengths"]):
            assert torch.all(row[n:] == 0)
        seen += batch["id"]
    assert sorted(seen) == [f"c{k}" for k in range(5)]  # every readable clip once; the corrupt one skipped


def test_stage_reads_from_the_duckdb_index(tmp_path):
    from unisono.data.index import MetadataIndex
    from unisono.data.manifest import write_manifest
    from unisono.data.sampler import from_index

    rng = np.random.default_rng(0)
    utts = []
    for k, tier in enumerate(["gold", "gold", "silver", "bronze", "synthetic"]):
        save_audio(tmp_path / f"c{k}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        utts.append(Utterance(f"c{k}", f"c{k}.wav", "hi", "en", 0.5, meta={"tier": tier, "quality": 0.9}))
    write_manifest(tmp_path / "manifest.jsonl", utts)
    with MetadataIndex() as ix:
        ix.add_manifest(tmp_path)
        chosen = from_index(ix, "alignment")  # gold, silver, synthetic
    assert sorted(u.id for u in chosen) == ["c0", "c1", "c2", "c4"]
    batches = list(make_loader(chosen, "alignment", BatchConfig(max_tokens=100)))
    assert sorted(i for b in batches for i in b["id"]) == sorted(u.id for u in chosen)
