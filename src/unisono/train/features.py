"""A cache of frozen-encoder outputs, so that training stages and epochs never re-encode audio.

The encoder is frozen in every stage, so its output for a clip is a constant. Encoding once
(in the variable-length regime used at inference) and reading the frames back costs far
less than the encoder forward on every step.

Layout of a store directory:

    store/
      shard-00000.safetensors     # {utterance id: (frames, D) float16}
      shard-00001.safetensors
      index.jsonl                 # {"id", "shard", "frames"} per stored clip, appended per shard
      rejected.jsonl              # {"id", "reason"} for clips that could not be read
      encoder.json                # the EncoderConfig that produced the frames

A shard is written whole (temporary file, then renamed) before its index lines are
appended, so a killed run resumes where it stopped and never reads a half-written shard.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unisono.model.encoder import AudioEncoder


class FeatureStore:
    """Read access to cached encoder frames by utterance id."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = self.directory / "index.jsonl"
        if not index.is_file():
            raise FileNotFoundError(
                f"no feature store at {self.directory} (index.jsonl missing); build one with `unisono train features`"
            )
        self.index: dict[str, tuple[str, int]] = {}
        with open(index) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    self.index[row["id"]] = (row["shard"], int(row["frames"]))
        self._handles: dict[str, object] = {}

    def __getstate__(self) -> dict:
        # open shard handles cannot cross into DataLoader workers; each process reopens its own
        return {**self.__dict__, "_handles": {}}

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self.index

    def __len__(self) -> int:
        return len(self.index)

    def frames(self, utt_id: str) -> int:
        return self.index[utt_id][1]

    def get(self, utt_id: str) -> torch.Tensor:
        """(frames, D) float16 encoder output of one clip."""
        try:
            shard, _ = self.index[utt_id]
        except KeyError:
            raise KeyError(f"{utt_id!r} is not in the feature store {self.directory}") from None
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.directory / shard), framework="pt")
        return self._handles[shard].get_tensor(utt_id)  # type: ignore[attr-defined]


def _done_ids(directory: Path) -> set[str]:
    done = set()
    for name in ("index.jsonl", "rejected.jsonl"):
        path = directory / name
        if path.is_file():
            with open(path) as f:
                done |= {json.loads(line)["id"] for line in f if line.strip()}
    return done


@torch.no_grad()
def build_feature_store(
    encoder: AudioEncoder,
    clips: Iterable[tuple[str, Callable[[], "object"]]],  # (utterance id, () -> 16 kHz mono float32 array)
    directory: str | Path,
    *,
    batch_seconds: float = 120.0,
    shard_clips: int = 2000,
    total: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> FeatureStore:
    """Encode every clip not yet stored. Resumable: rerun with the same arguments after a kill.

    Clips are loaded lazily; one that fails to load is recorded in rejected.jsonl with its reason.
    """
    from unisono.audio.features import batch_log_mel
    from unisono.audio.io import AudioError

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "encoder.json").write_text(json.dumps({k: v for k, v in asdict(encoder.config).items()}, indent=2))
    done = _done_ids(directory)
    next_shard = len(list(directory.glob("shard-*.safetensors")))
    pending: dict[str, torch.Tensor] = {}
    batch: list[tuple[str, object]] = []
    batch_len = 0.0

    def flush_batch() -> None:
        nonlocal batch, batch_len
        if not batch:
            return
        batch.sort(key=lambda x: len(x[1]))  # type: ignore[arg-type]
        mel, lengths = batch_log_mel([a for _, a in batch], n_mels=encoder.config.n_mels)  # type: ignore[misc]
        frames, flen = encoder(mel, lengths)  # (B, T', D), (B,)
        for (utt_id, _), f, n in zip(batch, frames, flen.tolist()):
            pending[utt_id] = f[:n].to(torch.float16).contiguous()
        if progress:
            progress(len(batch))
        batch, batch_len = [], 0.0

    def flush_shard() -> None:
        nonlocal next_shard, pending
        if not pending:
            return
        name = f"shard-{next_shard:05d}.safetensors"
        tmp = directory / f".{name}.tmp"
        save_file(pending, str(tmp))
        os.replace(tmp, directory / name)
        with open(directory / "index.jsonl", "a") as f:
            for utt_id, t in pending.items():
                f.write(json.dumps({"id": utt_id, "shard": name, "frames": int(t.shape[0])}) + "\n")
        next_shard += 1
        pending = {}

    rejected = open(directory / "rejected.jsonl", "a")
    try:
        for utt_id, load in clips:
            if utt_id in done:
                continue
            done.add(utt_id)
            try:
                audio = load()
            except (AudioError, OSError, RuntimeError) as e:
                rejected.write(json.dumps({"id": utt_id, "reason": f"{type(e).__name__}: {e}"}) + "\n")
                rejected.flush()
                continue
            seconds = len(audio) / 16000  # type: ignore[arg-type]
            if seconds > 30.0:
                rejected.write(json.dumps({"id": utt_id, "reason": f"{seconds:.1f} s is over the encoder's 30 s window"}) + "\n")
                continue
            batch.append((utt_id, audio))
            batch_len += seconds
            if batch_len >= batch_seconds:
                flush_batch()
            if len(pending) >= shard_clips:
                flush_shard()
        flush_batch()
        flush_shard()
    finally:
        rejected.close()
    return FeatureStore(directory)


def manifest_clips(rows: Sequence[dict], root: Path) -> Iterable[tuple[str, Callable[[], object]]]:
    """(id, loader) pairs for manifest rows whose `audio` is relative to `root`."""
    from unisono.audio.io import load_audio

    for row in rows:
        path = root / row["audio"]
        yield row["id"], (lambda path=path: load_audio(path, allow_silent=True))
