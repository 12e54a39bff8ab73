"""Tier-aware sampling for training: which tiers each stage draws from, in what mix, batched by tokens.

    utterances (manifest / DuckDB index)
      ─► StageMix: the stage's tiers and their mixing weights (and languages, length, quality)
      ─► per epoch, tier t contributes round(weight_t × epoch_size) draws: without replacement
         while the tier lasts, then again from a fresh shuffle (small tiers are oversampled)
      ─► duration buckets (quantiles of the drawn durations, so each bucket is equally full)
      ─► in each bucket, batches packed up to a token budget counting padding:
             batch_size × (audio tokens of the longest clip + its text tokens) <= max_tokens
      ─► batches shuffled; everything seeded by seed + epoch

Token counts: audio at the adaptor's rate (12.5 per second by default) plus text tokens,
estimated from characters unless a tokenizer's count is given. A clip whose tokens exceed
the budget on its own gets a batch of its own (with a warning once), never dropped silently.

The stages follow the report's curriculum: alignment (clean ASR data), unified pretraining
(everything usable), cool-down (only the best). Weights are relative; tiers a corpus lacks are
left out and the rest renormalised.

>>> sampler = TokenBudgetBatchSampler(utts, STAGES["alignment"], BatchConfig(max_tokens=4000))  # doctest: +SKIP
>>> loader = DataLoader(UtteranceDataset(utts), batch_sampler=sampler, collate_fn=collate)        # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from unisono.data.manifest import Utterance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageMix:
    name: str
    tiers: dict[str, float]  # tier -> relative mixing weight
    languages: tuple[str, ...] | None = None  # None: all
    max_duration_s: float = 30.0
    min_quality: float | None = None  # on meta["quality"]; clips without a score pass


STAGES: dict[str, StageMix] = {
    # adaptor alignment: only trustworthy transcripts
    "alignment": StageMix("alignment", {"gold": 0.5, "silver": 0.2, "synthetic": 0.3}),
    # unified pretraining: all usable data; synthetic speech for breadth, real for realism
    "unified": StageMix("unified", {"gold": 0.3, "silver": 0.2, "bronze": 0.1, "rover": 0.1, "synthetic": 0.3}),
    # ASR fine-tuning: verified real transcripts first
    "asr_sft": StageMix("asr_sft", {"gold": 0.4, "silver": 0.25, "rover": 0.15, "synthetic": 0.2}),
    # cool-down: the highest-quality data only
    "cooldown": StageMix("cooldown", {"gold": 0.8, "rover": 0.2}, min_quality=0.5),
}


@dataclass
class BatchConfig:
    max_tokens: int = 8000  # per batch, padding included
    audio_tokens_per_s: float = 12.5  # the adaptor's output rate (50 Hz encoder / stride 4)
    chars_per_text_token: float = 3.5  # English BPE averages ~4 characters a token; Chinese ~1
    num_buckets: int = 8
    max_batch_size: int | None = None
    shuffle: bool = True
    seed: int = 0


def estimate_tokens(u: Utterance, config: BatchConfig) -> int:
    audio = math.ceil(u.duration * config.audio_tokens_per_s)
    per = 1.0 if u.language == "zh" else config.chars_per_text_token
    return audio + math.ceil(len(u.text) / per) + 1  # +1: the end token


def select(utterances: Sequence[Utterance], stage: StageMix) -> list[int]:
    """Indices of the utterances this stage may draw (its tiers, languages, length, quality)."""
    out = []
    for i, u in enumerate(utterances):
        if u.meta.get("tier") not in stage.tiers:
            continue
        if stage.languages is not None and u.language not in stage.languages:
            continue
        if u.duration > stage.max_duration_s:
            continue
        q = u.meta.get("quality")
        if stage.min_quality is not None and q is not None and q < stage.min_quality:
            continue
        out.append(i)
    return out


def tier_draws(utterances: Sequence[Utterance], stage: StageMix, epoch_size: int | None, rng: np.random.Generator) -> list[int]:
    """One epoch of draws: round(weight × epoch_size) per tier (weights renormalised over the
    tiers present), without replacement within a tier until it is used up."""
    by_tier: dict[str, list[int]] = {t: [] for t in stage.tiers}
    for i in select(utterances, stage):
        by_tier[utterances[i].meta["tier"]].append(i)
    present = {t: w for t, w in stage.tiers.items() if by_tier[t] and w > 0}
    if not present:
        raise ValueError(f"stage {stage.name!r} draws from tiers {sorted(stage.tiers)}, and none of them has "
                         f"clips here (tiers present: {sorted({str(u.meta.get('tier')) for u in utterances})})")
    total_w = sum(present.values())
    size = epoch_size if epoch_size is not None else sum(len(by_tier[t]) for t in present)
    draws: list[int] = []
    for t, w in present.items():
        n = round(size * w / total_w)
        pool = np.asarray(by_tier[t])
        full, rest = divmod(n, len(pool))
        for _ in range(full):
            draws.extend(pool[rng.permutation(len(pool))].tolist())
        draws.extend(pool[rng.permutation(len(pool))[:rest]].tolist())
    return draws


def estimate_duration_buckets(durations: Sequence[float], num_buckets: int) -> np.ndarray:
    """Upper bucket edges (num_buckets - 1 of them) at duration quantiles: equally full buckets."""
    if len(durations) == 0 or num_buckets <= 1:
        return np.zeros(0)
    qs = np.linspace(0, 1, num_buckets + 1)[1:-1]
    return np.unique(np.quantile(np.asarray(durations, dtype=float), qs))


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches of utterance indices for a DataLoader's `batch_sampler`; call `set_epoch` per epoch."""

    def __init__(self, utterances: Sequence[Utterance], stage: StageMix, config: BatchConfig | None = None, *,
                 epoch_size: int | None = None, token_count: Callable[[Utterance], int] | None = None):
        self.utterances = utterances
        self.stage = stage
        self.config = config or BatchConfig()
        self.epoch_size = epoch_size
        self.tokens = np.array([(token_count or (lambda u: estimate_tokens(u, self.config)))(u) for u in utterances])
        self.epoch = 0
        self._warned = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed + self.epoch)
        draws = tier_draws(self.utterances, self.stage, self.epoch_size, rng)
        durations = np.array([self.utterances[i].duration for i in draws])
        edges = estimate_duration_buckets(durations, cfg.num_buckets)
        bucket_of = np.searchsorted(edges, durations, side="left")
        batches: list[list[int]] = []
        for b in range(len(edges) + 1):
            members = [draws[k] for k in np.flatnonzero(bucket_of == b)]
            if cfg.shuffle:
                members = [members[k] for k in rng.permutation(len(members))]
            batch: list[int] = []
            longest = 0
            for i in members:
                cost = max(longest, int(self.tokens[i])) * (len(batch) + 1)
                full = cfg.max_batch_size is not None and len(batch) >= cfg.max_batch_size
                if batch and (cost > cfg.max_tokens or full):
                    batches.append(batch)
                    batch, longest = [], 0
                if self.tokens[i] > cfg.max_tokens and not self._warned:
                    log.warning("clip %s needs %d tokens, over the batch budget of %d: it gets a batch of its own",
                                self.utterances[i].id, self.tokens[i], cfg.max_tokens)
                    self._warned = True
                batch.append(i)
                longest = max(longest, int(self.tokens[i]))
            if batch:
                batches.append(batch)
        if cfg.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class UtteranceDataset(Dataset):
    """Audio and text of manifest utterances; `roots[i]` is the folder utterance i's path is relative to
    (absolute paths, as the DuckDB index gives, need none). A clip that fails to load yields None."""

    def __init__(self, utterances: Sequence[Utterance], roots: Sequence[str | Path] | str | Path | None = None):
        self.utterances = utterances
        if roots is None or isinstance(roots, (str, Path)):
            self.roots = [Path(roots or ".")] * len(utterances)
        else:
            self.roots = [Path(r) for r in roots]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        from unisono.audio.io import AudioError, load_audio

        u = self.utterances[i]
        try:
            audio = load_audio(u.audio_path(self.roots[i]))
        except (AudioError, OSError) as e:
            log.warning("skipping %s: %s", u.id, e)
            return None
        return {"id": u.id, "audio": torch.from_numpy(audio), "text": u.text, "language": u.language,
                "tier": u.meta.get("tier")}


def collate(items: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Pad audio to the longest clip: audio (B, T) float32, audio_lengths (B,), lists for the rest."""
    items = [x for x in items if x is not None]
    lengths = torch.tensor([len(x["audio"]) for x in items], dtype=torch.long)
    audio = torch.zeros(len(items), int(lengths.max()) if len(items) else 0)  # (B, T)
    for b, x in enumerate(items):
        audio[b, : len(x["audio"])] = x["audio"]
    return {"audio": audio, "audio_lengths": lengths, **{k: [x[k] for x in items] for k in ("id", "text", "language", "tier")}}


def make_loader(utterances: Sequence[Utterance], stage: StageMix | str, config: BatchConfig | None = None, *,
                roots: Sequence[str | Path] | str | Path | None = None, num_workers: int = 0,
                epoch_size: int | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader of token-budget batches drawn per `stage` (a StageMix or a name in STAGES)."""
    stage = STAGES[stage] if isinstance(stage, str) else stage
    sampler = TokenBudgetBatchSampler(utterances, stage, config, epoch_size=epoch_size)
    return torch.utils.data.DataLoader(UtteranceDataset(utterances, roots), batch_sampler=sampler, collate_fn=collate,
                                       num_workers=num_workers)


def from_index(index: Any, stage: StageMix | str) -> list[Utterance]:
    """The utterances a stage can draw from a `MetadataIndex` (audio paths absolute)."""
    stage = STAGES[stage] if isinstance(stage, str) else stage
    return index.utterances(tier=list(stage.tiers), language=list(stage.languages) if stage.languages else None,
                            max_duration=stage.max_duration_s)


__all__ = ["BatchConfig", "STAGES", "StageMix", "TokenBudgetBatchSampler", "UtteranceDataset", "collate",
           "estimate_duration_buckets", "estimate_tokens", "from_index", "make_loader", "select", "tier_draws"]
