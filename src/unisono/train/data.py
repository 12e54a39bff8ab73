"""Training data: manifests -> a deterministic stream of token-budget micro-batches.

    manifests ─► rows passing the stage's filters (language, quality, duration)
              ─► per epoch (seed, epoch): tier draws or a shuffle ─► a task per row ─► tokenised
              ─► token-budget packing: rows x longest row <= max_tokens ─► batches shuffled
              ─► micro-batch g of the stream: (epoch, k) ─► audio or cached encoder frames,
                 SpecAugment, prompts, padding ─► unisono.model.unisono.Batch

Everything is a pure function of (seed, epoch, position): micro-batch g is the same batch
in every run, so a resumed run only needs g (the data-loader position) to continue exactly,
and N processes reading g = r, r + N, r + 2N ... together see the batches one process reads.

A clip that fails to load (or is missing from the feature store) does not stop training: its
row is trained on its transcript as a text example instead, and the failure is counted.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from unisono.model.adaptor import adaptor_length
from unisono.model.unisono import Batch
from unisono.model.vocab import Vocab
from unisono.train.config import DataConfig
from unisono.train.specaugment import spec_augment
from unisono.train.tasks import AUDIO_TASKS, PARTNER_KEYS, TASKS, Example, TaskContext, build_example, check_tasks

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_PARTNERS = 2  # rows that may follow a row in a continuation


# ---- manifests ---------------------------------------------------------------------------------
@dataclass
class Corpus:
    """Rows of one or more manifests, each with the folder its audio path is relative to."""

    rows: list  # unisono.data.manifest.Utterance
    roots: list[Path]

    @classmethod
    def load(cls, paths: Sequence[str | Path]) -> "Corpus":
        from unisono.data.manifest import MANIFEST_NAME, read_manifest

        rows, roots = [], []
        if not paths:
            raise ValueError("no training manifests: set data.train to one or more manifest.jsonl files (or folders)")
        for p in paths:
            path = Path(p)
            path = path / MANIFEST_NAME if path.is_dir() else path
            if not path.is_file():
                raise FileNotFoundError(f"training manifest {path} does not exist")
            part = read_manifest(path, skip_partial_tail=True)
            rows += part
            roots += [path.parent] * len(part)
        return cls(rows, roots)

    def texts(self) -> Iterator[str]:
        return (r.text for r in self.rows)

    def partners(self, key: str) -> list[list[int]]:
        """For each row, the next rows (manifest order) with the same value of `key`."""
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(self.rows):
            value = getattr(r, key, None) if key in ("speaker", "language") else r.meta.get(key)
            if value is not None:
                groups.setdefault(value, []).append(i)
        out: list[list[int]] = [[] for _ in self.rows]
        for members in groups.values():
            for j, i in enumerate(members):
                out[i] = members[j + 1 : j + 1 + N_PARTNERS]
        return out


def audio_positions(n_samples: int, stride: int) -> int:
    """Adaptor positions of a clip of `n_samples` at 16 kHz (mel 100 Hz -> encoder 50 Hz -> /stride)."""
    from unisono.audio.features import n_frames
    from unisono.model.encoder import output_lengths

    return int(adaptor_length(int(output_lengths(torch.tensor(n_frames(n_samples)))), stride))


# ---- the stream --------------------------------------------------------------------------------
Item = tuple[int, str, int]  # (row, task, draw position in the epoch)


class StageData:
    """The micro-batch stream of one phase: `batch(g)` is micro-batch g, for any g >= 0."""

    def __init__(
        self,
        corpus: Corpus,
        vocab: Vocab,
        config: DataConfig,
        *,
        tasks: dict[str, float] | None = None,
        seed: int = 0,
        n_mels: int = 80,
        adaptor_stride: int = 4,
        encoder_dim: int | None = None,
    ):
        self.corpus, self.vocab, self.config, self.seed = corpus, vocab, config, seed
        self.n_mels, self.stride, self.encoder_dim = n_mels, adaptor_stride, encoder_dim
        self.tasks = dict(tasks or config.tasks)
        check_tasks(self.tasks)
        self.store = None
        if config.features:
            from unisono.train.features import FeatureStore

            self.store = FeatureStore(config.features)
        self.partners = {t: corpus.partners(PARTNER_KEYS[t]) for t in self.tasks if t in PARTNER_KEYS}
        self.eligible, self.feasible = self._eligible()
        if not self.eligible:
            raise ValueError(
                f"no training row fits this phase: {len(corpus.rows)} rows, tasks {sorted(self.tasks)}, "
                f"languages {config.languages}, max {config.max_duration_s} s, min quality {config.min_quality}"
            )
        self._plans: dict[int, list[list[Item]]] = {}
        self._epoch_starts = [0]  # first micro-batch index of each planned epoch
        self.failed_clips = 0

    # -- which rows, which tasks ---------------------------------------------------------------
    def _eligible(self) -> tuple[list[int], dict[int, list[str]]]:
        cfg = self.config
        probe = np.random.default_rng(0)
        eligible, feasible = [], {}
        for i, r in enumerate(self.corpus.rows):
            if cfg.languages is not None and r.language not in cfg.languages:
                continue
            if r.duration > cfg.max_duration_s:
                continue
            q = r.meta.get("quality")
            if cfg.min_quality is not None and q is not None and q < cfg.min_quality:
                continue
            ok = [t for t, w in self.tasks.items() if w > 0 and TASKS[t](self._context(i, t, 1, probe)) is not None]
            if ok:
                eligible.append(i)
                feasible[i] = ok
        return eligible, feasible

    def _context(self, row: int, task: str, n_audio: int, rng: np.random.Generator) -> TaskContext:
        partners = [self.corpus.rows[j] for j in self.partners[task][row]] if task in self.partners else []
        return TaskContext(self.corpus.rows[row], partners, n_audio, rng, self.config.language_token_prob)

    def _estimated_positions(self, row: int) -> int:
        r = self.corpus.rows[row]
        if self.store is not None and r.id in self.store:
            return int(adaptor_length(self.store.frames(r.id), self.stride))
        return audio_positions(int(round(r.duration * SAMPLE_RATE)), self.stride)

    # -- epochs ------------------------------------------------------------------------------------
    def draws(self, epoch: int, rng: np.random.Generator) -> list[int]:
        """Rows drawn in an epoch: the tier mix of the data engine's sampler, or each row once."""
        tiers = self.config.tiers
        if tiers is None:
            return [self.eligible[k] for k in rng.permutation(len(self.eligible))]
        from unisono.data.sampler import STAGES, StageMix, tier_draws

        if isinstance(tiers, str):
            if tiers not in STAGES:
                raise ValueError(f"data.tiers {tiers!r} is not one of {', '.join(STAGES)} (or give {{tier: weight}})")
            mix = STAGES[tiers]
        else:
            mix = StageMix("custom", dict(tiers))
        # the stage's own filters are applied already; keep only the tier mix
        mix = StageMix(mix.name, mix.tiers, None, self.config.max_duration_s, None)
        rows = [self.corpus.rows[i] for i in self.eligible]
        return [self.eligible[k] for k in tier_draws(rows, mix, None, rng)]

    def plan(self, epoch: int) -> list[list[Item]]:
        """Micro-batches of an epoch, each a list of (row, task, draw position)."""
        if epoch in self._plans:
            return self._plans[epoch]
        cfg = self.config
        rng = np.random.default_rng([self.seed, epoch])
        items: list[tuple[Item, int]] = []
        for pos, row in enumerate(self.draws(epoch, rng)):
            options = self.feasible[row]
            weights = np.array([self.tasks[t] for t in options], dtype=float)
            task = options[int(rng.choice(len(options), p=weights / weights.sum()))]
            n_audio = self._estimated_positions(row) if task in AUDIO_TASKS else 0
            example = self._example(epoch, row, task, pos, n_audio)
            items.append(((row, task, pos), len(example.ids)))
        # sort by length within windows (little padding, order still random across windows),
        # pack up to the token budget, then shuffle the batches
        window = 64 * cfg.max_batch_size
        batches: list[list[Item]] = []
        for w in range(0, len(items), window):
            chunk = sorted(items[w : w + window], key=lambda x: x[1])
            batch: list[Item] = []
            longest = 0
            for item, n in chunk:
                if batch and (max(longest, n) * (len(batch) + 1) > cfg.max_tokens or len(batch) >= cfg.max_batch_size):
                    batches.append(batch)
                    batch, longest = [], 0
                batch.append(item)
                longest = max(longest, n)
            if batch:
                batches.append(batch)
        batches = [batches[k] for k in rng.permutation(len(batches))]
        self._plans = {e: p for e, p in self._plans.items() if e >= epoch - 1}  # keep memory flat
        self._plans[epoch] = batches
        return batches

    def locate(self, g: int) -> tuple[int, int]:
        """(epoch, index in epoch) of micro-batch g of the stream."""
        while g >= self._epoch_starts[-1]:
            epoch = len(self._epoch_starts) - 1
            self._epoch_starts.append(self._epoch_starts[-1] + len(self.plan(epoch)))
        epoch = int(np.searchsorted(self._epoch_starts, g, side="right")) - 1
        return epoch, g - self._epoch_starts[epoch]

    # -- one micro-batch -----------------------------------------------------------------------------
    def _example(self, epoch: int, row: int, task: str, pos: int, n_audio: int) -> Example:
        rng = np.random.default_rng([self.seed, epoch, pos, 1])
        example = build_example(task, self._context(row, task, n_audio, rng), self.vocab, row)
        if example is None:  # cannot happen for a feasible task; keep the stream alive if it does
            raise ValueError(f"task {task!r} could not be built for row {self.corpus.rows[row].id!r}")
        return example

    def _load_clip(self, row: int) -> torch.Tensor | np.ndarray:
        r = self.corpus.rows[row]
        if self.store is not None:
            return self.store.get(r.id)  # (frames, D) float16
        from unisono.audio.io import load_audio

        return load_audio(r.audio_path(self.corpus.roots[row]), max_duration_s=self.config.max_duration_s)

    def batch(self, g: int) -> Batch:
        from unisono.audio.io import AudioError

        epoch, k = self.locate(g)
        examples: list[Example] = []
        clips: list[Any] = []
        for row, task, pos in self.plan(epoch)[k]:
            n_audio = 0
            if task in AUDIO_TASKS:
                try:
                    clip = self._load_clip(row)
                except (AudioError, OSError, KeyError, RuntimeError) as e:
                    self.failed_clips += 1
                    log.warning("clip %s: %s; trained as text this time", self.corpus.rows[row].id, e)
                    task = "text"
                else:
                    if self.store is not None:  # (frames, D) at 50 Hz
                        n_audio = int(adaptor_length(clip.shape[0], self.stride))
                    else:
                        n_audio = audio_positions(len(clip), self.stride)
                    clips.append((clip, pos))
            examples.append(self._example(epoch, row, task, pos, n_audio))
        return self._collate(examples, clips, epoch)

    # -- the Trainer's view (unisono.train.trainer.Stream) --------------------------------------------
    def batches(self, start: int, stride: int) -> Iterator[Batch]:
        return loader(self, start, stride, self.config.num_workers)

    def position(self, g: int) -> dict[str, Any]:
        return {"epoch_position": list(self.locate(g))}

    def counters(self) -> dict[str, Any]:
        return {"failed_clips": self.failed_clips}

    def _collate(self, examples: list[Example], clips: list[tuple[Any, int]], epoch: int) -> Batch:
        pad = self.vocab.pad_id
        L = max(len(e.ids) for e in examples)
        B = len(examples)
        ids = torch.full((B, L), pad, dtype=torch.long)
        targets = torch.full((B, L), -100, dtype=torch.long)
        mask = torch.zeros(B, L, dtype=torch.bool)
        for b, e in enumerate(examples):
            t = torch.tensor(e.ids)
            ids[b, : len(e.ids)] = t
            mask[b, : len(e.ids)] = True
            targets[b, e.target_start : len(e.ids)] = t[e.target_start :]
        batch = Batch(input_ids=ids, attention_mask=mask, targets=targets)
        if not clips:
            return batch
        aug = self.config.specaugment

        def generator(pos: int) -> torch.Generator:
            return torch.Generator().manual_seed(int(np.random.default_rng([self.seed, epoch, pos, 2]).integers(2**62)))

        if self.store is not None:
            lengths = torch.tensor([c.shape[0] for c, _ in clips])
            feats = torch.zeros(len(clips), int(lengths.max()), clips[0][0].shape[1], dtype=clips[0][0].dtype)
            for i, (c, pos) in enumerate(clips):
                f = c.float()
                if aug is not None:  # channels x frames; encoder channels are wider than mel bins
                    f = spec_augment(f.T, aug, generator(pos), channel_scale=f.shape[1] / self.n_mels).T
                feats[i, : c.shape[0]] = f.to(feats.dtype)
            batch.encoder_out, batch.encoder_lengths = feats, lengths
        else:
            from unisono.audio.features import batch_log_mel

            mel, lengths = batch_log_mel([c for c, _ in clips], n_mels=self.n_mels)
            if aug is not None:
                for i, (_, pos) in enumerate(clips):
                    n = int(lengths[i])
                    mel[i, :, :n] = spec_augment(mel[i, :, :n], aug, generator(pos))
            batch.mel, batch.mel_lengths = mel, lengths
        return batch


class MicroBatches(torch.utils.data.Dataset):
    """Map-style view of the stream for a DataLoader (index = micro-batch g)."""

    def __init__(self, data: StageData):
        self.data = data

    def __getitem__(self, g: int) -> Batch:
        return self.data.batch(int(g))

    def __len__(self) -> int:  # the stream is endless; samplers give the indices
        return 2**62


def loader(data: StageData, start: int, stride: int, num_workers: int = 0) -> Iterator[Batch]:
    """Micro-batches start, start + stride, start + 2 stride, ... (endless)."""
    if num_workers == 0:
        return (data.batch(g) for g in itertools.count(start, stride))
    dl = torch.utils.data.DataLoader(
        MicroBatches(data),
        batch_size=None,  # items are already batches
        sampler=itertools.count(start, stride),
        num_workers=num_workers,
        persistent_workers=False,
        prefetch_factor=2,
    )
    return iter(dl)
