"""Training data of the speech codec: audio, frozen-encoder features and a held-out test set.

    codec_data/
      clips.jsonl           one line per stored clip: id, speaker, language, text, samples,
                            audio_offset (samples into audio.bin), tokens, feature_offset
      audio.bin             int16 PCM of every clip, 16 kHz, back to back
      features-L{n}.bin     float16 (tokens, D) pooled encoder features of layer n, back to back
      rejected.jsonl        clips that could not be read, with the reason
      test-en/manifest.jsonl + audio/   the held-out English set (texts never in the training clips)
      prepare.json          what was asked for (a resumed run must ask for the same)

Clips are appended in blocks: the binary files first, then the index lines. A killed run
resumes by cutting the binary files back to what the index accounts for.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

INDEX = "clips.jsonl"
AUDIO = "audio.bin"
REJECTED = "rejected.jsonl"
TEST_SET = "test-en"


@dataclass
class SourceSpec:
    """Clips taken from one manifest."""

    manifest: str  # a manifest.jsonl (audio paths relative to its folder)
    limit: int | None = None  # at most this many clips (seeded random choice)
    languages: tuple[str, ...] = ()  # only these languages (empty: all)
    clean_only: bool = True  # skip clips with noise, reverberation... in meta.augment (gain and speed are kept)
    per_engine: bool = True  # spread `limit` evenly over the synthesis engines (meta.engine)


@dataclass
class PrepareConfig:
    sources: list[SourceSpec] = field(default_factory=list)
    layers: tuple[int, ...] = (3, 4)  # encoder layers whose features are stored
    test_source: str | None = None  # manifest the held-out English set is drawn from
    test_clips: int = 45
    exclude_texts: list[str] = field(default_factory=list)  # manifests (evaluation sets) whose texts never train
    max_seconds: float = 20.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _rows(manifest: Path) -> list[dict]:
    from unisono.data.manifest import read_manifest

    return [u.to_dict() | {"_root": str(manifest.parent)} for u in read_manifest(manifest)]


# Augmentations that leave the signal clean: the detokenizer may learn to reproduce them.
# Noise, reverberation, limiting and telephone bands would be learnt as part of the voice.
CLEAN_AUGMENTATIONS = frozenset({"gain", "speed"})


def _is_clean(row: dict) -> bool:
    return all(a.get("kind") in CLEAN_AUGMENTATIONS for a in (row.get("meta") or {}).get("augment") or [])


def choose_test_set(rows: list[dict], n: int, seed: int) -> list[dict]:
    """n clean English clips, spread over engines, each with a distinct text."""
    rng = random.Random(seed)
    by_engine: dict[str, list[dict]] = {}
    for r in rows:
        if r["language"] == "en" and _is_clean(r) and 1.0 <= r["duration"] <= 12.0:
            by_engine.setdefault((r.get("meta") or {}).get("engine", "?"), []).append(r)
    chosen, texts = [], set()
    engines = sorted(by_engine)
    for e in engines:
        rng.shuffle(by_engine[e])
    while len(chosen) < n and any(by_engine.values()):
        for e in engines:
            while by_engine[e] and len(chosen) < n:
                r = by_engine[e].pop()
                if r["text"] not in texts:
                    chosen.append(r)
                    texts.add(r["text"])
                    break
    return chosen


def choose_clips(spec: SourceSpec, held_out_texts: set[str], seed: int, max_seconds: float) -> list[dict]:
    rows = [r for r in _rows(Path(spec.manifest))
            if (not spec.languages or r["language"] in spec.languages)
            and (not spec.clean_only or _is_clean(r))
            and r["text"] not in held_out_texts and 0.3 <= r["duration"] <= max_seconds]
    rng = random.Random(seed)
    rng.shuffle(rows)
    if spec.limit is None or len(rows) <= spec.limit:
        return rows
    if not spec.per_engine:
        return rows[: spec.limit]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['language']}:{(r.get('meta') or {}).get('engine', '?')}", []).append(r)
    out, keys = [], sorted(groups)
    while len(out) < spec.limit:  # round robin over engines
        progressed = False
        for k in keys:
            if groups[k] and len(out) < spec.limit:
                out.append(groups[k].pop())
                progressed = True
        if not progressed:
            break
    return out


def write_test_set(rows: list[dict], directory: Path) -> Path:
    """Copy the held-out clips with a manifest of their own (an evaluation set folder)."""
    from unisono.data.manifest import ManifestWriter, Utterance

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "audio").mkdir(exist_ok=True)
    tmp = directory / "manifest.jsonl.tmp"
    tmp.unlink(missing_ok=True)
    with ManifestWriter(tmp) as w:
        for r in rows:
            src = Path(r["_root"]) / r["audio"]
            rel = f"audio/{r['id']}{src.suffix}"
            shutil.copyfile(src, directory / rel)
            d = {k: v for k, v in r.items() if k != "_root"} | {"audio": rel}
            w.write(Utterance.from_dict(d))
    os.replace(tmp, directory / "manifest.jsonl")
    return directory


class CodecData:
    """Read access to a prepared folder (memory-mapped)."""

    def __init__(self, directory: str | Path, layer: int | None = None):
        self.directory = Path(directory)
        index = self.directory / INDEX
        if not index.is_file():
            raise FileNotFoundError(f"no codec training data at {self.directory} ({INDEX} missing); "
                                    "run `unisono train codec prepare`")
        self.clips = [json.loads(line) for line in open(index) if line.strip()]
        self.config = read_settings(self.directory / "prepare.json")
        self.audio = np.memmap(self.directory / AUDIO, dtype=np.int16, mode="r")
        self.layer = layer
        self.features = None
        if layer is not None:
            path = self.directory / f"features-L{layer}.bin"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: features of layer {layer} were not prepared (layers {self.config['layers']})")
            self.dim = int(self.config["dim"])
            self.features = np.memmap(path, dtype=np.float16, mode="r").reshape(-1, self.dim)

    def __len__(self) -> int:
        return len(self.clips)

    def audio_of(self, i: int) -> np.ndarray:
        c = self.clips[i]
        return self.audio[c["audio_offset"]: c["audio_offset"] + c["samples"]].astype(np.float32) / 32768.0

    def features_of(self, i: int) -> np.ndarray:
        c = self.clips[i]
        assert self.features is not None, "open CodecData with a layer to read features"
        return self.features[c["feature_offset"]: c["feature_offset"] + c["tokens"]]

    @property
    def total_tokens(self) -> int:
        return sum(c["tokens"] for c in self.clips)

    def draw_weights(self, oversample: Sequence[tuple[str, float]]) -> np.ndarray:
        """How often each clip is drawn, relative to the others: 1, or the weight of the first
        (manifest, weight) pair whose manifest holds the clip's id. Clips are short or long, real
        or synthetic; this lets a small source (the real speech) count for more than its share."""
        weights = np.ones(len(self.clips))
        seen: set[int] = set()
        for manifest, weight in oversample:
            if weight <= 0:
                raise ValueError(f"oversampling weight {weight} for {manifest}: it must be positive")
            held = self.indices_from(manifest)
            for i in held - seen:
                weights[i] = weight
            seen.update(held)
        return weights

    def indices_from(self, manifest: str | Path) -> set[int]:
        """Indices of the clips whose id is in this source manifest; an error if none is."""
        return set(self.texts_from(manifest))

    def texts_from(self, manifest: str | Path) -> dict[int, str]:
        """The text this source manifest gives each clip of the folder whose id it holds (the clip's
        index -> text, "" where the row has none); an error if it holds none of them."""
        position = {c["id"]: i for i, c in enumerate(self.clips)}
        held = {position[r["id"]]: r.get("text") or "" for r in _rows(Path(manifest)) if r["id"] in position}
        if not held:
            raise ValueError(f"no clip of {self.directory} comes from {manifest}")
        return held


def read_settings(path: Path) -> dict:
    """A folder's prepare.json. Folders prepared by earlier releases record `frame_difference`, an option
    this release no longer has: 0 (plain mean features, what every codec reads) is dropped, any other value refused."""
    settings = json.loads(path.read_text())
    if settings.pop("frame_difference", 0.0) != 0.0:
        raise ValueError(f"{path.parent} holds [mean, difference] features (frame_difference): this release no longer "
                         "supports them; prepare the folder again")
    return settings


def _truncate_to_index(directory: Path, clips: list[dict], layers: Sequence[int], dim: int) -> None:
    """Cut the binary files back to what the index accounts for (a killed run may have written more)."""
    samples = sum(c["samples"] for c in clips)
    tokens = sum(c["tokens"] for c in clips)
    with open(directory / AUDIO, "ab") as f:
        f.truncate(2 * samples)
    for layer in layers:
        with open(directory / f"features-L{layer}.bin", "ab") as f:
            f.truncate(2 * dim * tokens)


def _first_of_each_id(rows: Iterator[dict]) -> list[dict]:
    """One clip per id, the first source's. Synthetic ids are hashes of the text, so two corpora
    that drew the same sentence share an id; the index (and a resumed run) count clips by id."""
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["id"], r)
    return list(first.values())


def prepare(
    config: PrepareConfig,
    directory: str | Path,
    tokenizer_factory: Callable[[], "object"] | None = None,
    progress: Callable[[int, int], None] | None = None,
    block_seconds: float = 240.0,
) -> CodecData:
    """Build (or resume) a codec data folder. `tokenizer_factory` makes the SpeechTokenizer whose
    encoder computes the features (default: the bundled Whisper tiny.en encoder)."""
    from unisono.audio.io import AudioError, load_audio
    from unisono.codec.config import TokenizerConfig
    from unisono.codec.tokenizer import SpeechTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_factory() if tokenizer_factory else SpeechTokenizer(TokenizerConfig())
    dim = tokenizer.feature_dim
    asked = config.to_dict() | {"dim": dim}
    saved = directory / "prepare.json"
    if saved.is_file():
        before = read_settings(saved)
        before.setdefault("exclude_texts", [])  # folders prepared before the option existed
        if before != json.loads(json.dumps(asked)):
            raise ValueError(f"{directory} was prepared with other settings ({saved}); use a new folder or the same settings")
    else:
        saved.write_text(json.dumps(asked, indent=2))

    held_out: list[dict] = []
    if config.test_source:
        held_out = choose_test_set(_rows(Path(config.test_source)), config.test_clips, config.seed)
        if not (directory / TEST_SET / "manifest.jsonl").is_file():
            write_test_set(held_out, directory / TEST_SET)
    held_texts = {r["text"] for r in held_out} | {r["text"] for m in config.exclude_texts for r in _rows(Path(m))}
    wanted = _first_of_each_id(
        r for i, s in enumerate(config.sources) for r in choose_clips(s, held_texts, config.seed + i, config.max_seconds))

    index = directory / INDEX
    clips = [json.loads(line) for line in open(index) if line.strip()] if index.is_file() else []
    _truncate_to_index(directory, clips, config.layers, dim)
    done = {c["id"] for c in clips}
    if (directory / REJECTED).is_file():
        done |= {json.loads(line)["id"] for line in open(directory / REJECTED) if line.strip()}
    audio_offset = sum(c["samples"] for c in clips)
    feature_offset = sum(c["tokens"] for c in clips)
    todo = [r for r in wanted if r["id"] not in done]
    if progress:
        progress(len(wanted) - len(todo), len(wanted))

    def blocks() -> Iterator[list[tuple[dict, np.ndarray]]]:
        block, seconds = [], 0.0
        with open(directory / REJECTED, "a") as rejected:
            for r in todo:
                try:
                    audio = load_audio(Path(r["_root"]) / r["audio"], max_duration_s=config.max_seconds + 1)
                except (AudioError, OSError) as e:
                    rejected.write(json.dumps({"id": r["id"], "reason": f"{type(e).__name__}: {e}"}) + "\n")
                    rejected.flush()
                    continue
                block.append((r, audio))
                seconds += len(audio) / 16000
                if seconds >= block_seconds:
                    yield block
                    block, seconds = [], 0.0
        if block:
            yield block

    n_done = len(wanted) - len(todo)
    for block in blocks():
        feats = tokenizer.layer_features([a for _, a in block], config.layers)
        with open(directory / AUDIO, "ab") as f:
            for _, audio in block:
                f.write((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
        for layer in config.layers:
            with open(directory / f"features-L{layer}.bin", "ab") as f:
                for d in feats:
                    f.write(d[layer].to(torch.float16).numpy().tobytes())
        with open(index, "a") as f:
            for (r, audio), d in zip(block, feats):
                n_tok = int(d[config.layers[0]].shape[0])
                f.write(json.dumps({
                    "id": r["id"], "speaker": r.get("speaker") or r["id"], "language": r["language"], "text": r["text"],
                    "samples": len(audio), "audio_offset": audio_offset, "tokens": n_tok, "feature_offset": feature_offset,
                }) + "\n")
                audio_offset += len(audio)
                feature_offset += n_tok
        n_done += len(block)
        if progress:
            progress(n_done, len(wanted))
    return CodecData(directory)
