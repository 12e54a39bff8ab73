"""Manifests: one JSON object per utterance, one utterance per line (lhotse-style, in seconds).

A manifest is a `manifest.jsonl` file; each `audio` path is relative to the manifest's folder,
so a corpus folder can be moved or copied whole. The fixed fields are those of the real speech
sets (`id, audio, text, language, duration, speaker, source`); everything else about a clip
lives in the open `meta` dict. Keys the engine writes there, by convention:

    engine, voice      synthesis engine and voice ("espeak-ng", "en-us+m3")
    synth              synthesis parameters ({"rate": 170, "pitch": 40, ...})
    augment            list of augmentations applied, in order ([{"kind": "noise", "snr_db": 12.0}, ...])
    text_raw           the sentence as written, before spoken-form normalisation
    quality            overall quality score in [0, 1] (higher is better)
    scores             named quality measures ({"snr_db": 21.3, "clipping": 0.0, "bandwidth_hz": 7600})
    tier               data tier ("gold", "silver", ...) used by the training sampler
    synthetic          True for synthesised speech

Unknown top-level keys of a line (such as `text_raw` in the LJ Speech manifest) are kept in
`meta`, so any manifest with the fixed fields loads unchanged.

A run that is killed mid-write leaves at most one partial last line; `read_manifest` refuses
it unless told to skip it, and `ManifestWriter` cuts it off before appending, so a resumed run
never builds on a torn record.

>>> u = Utterance("a1", "wav/a1.flac", "hello there", "en", 1.25, speaker="en-us+m3")
>>> Utterance.from_dict(u.to_dict()) == u
True
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

MANIFEST_NAME = "manifest.jsonl"
REJECTED_NAME = "rejected.jsonl"

# Fields every manifest line carries (speaker and source may be null).
CORE_FIELDS = ("id", "audio", "text", "language", "duration", "speaker", "source")


class ManifestError(ValueError):
    """A manifest line that is not a valid utterance; the message names the file and line."""


@dataclass
class Utterance:
    """One clip: where its audio is, what is said, and everything known about it."""

    id: str
    audio: str  # path relative to the manifest's folder
    text: str  # what is spoken, in spoken form ("twenty five", not "25")
    language: str  # ISO 639-1: "en", "zh"
    duration: float  # seconds
    speaker: str | None = None  # speaker id, or the synthetic voice
    source: str | None = None  # provenance of the text/audio ("debian:fortunes-min:/usr/share/games/fortunes/fortunes#12")
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in CORE_FIELDS}
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Utterance:
        missing = [k for k in ("id", "audio", "text", "language", "duration") if k not in d]
        if missing:
            raise ManifestError(f"missing field(s) {', '.join(missing)} in {sorted(d)}")
        meta = dict(d.get("meta") or {})
        # Extra top-level keys (e.g. text_raw) are metadata too.
        meta.update({k: v for k, v in d.items() if k not in CORE_FIELDS and k != "meta"})
        if not isinstance(d["text"], str):  # null would be read as the text "None"
            raise ManifestError(f"text of {d['id']!r} is {json.dumps(d['text'])}, not a string")
        try:
            duration = float(d["duration"])
        except (TypeError, ValueError):
            raise ManifestError(f"duration {d['duration']!r} of {d['id']!r} is not a number") from None
        if not duration >= 0:
            raise ManifestError(f"duration {duration} of {d['id']!r} is negative or NaN")
        return cls(
            id=str(d["id"]),
            audio=str(d["audio"]),
            text=str(d["text"]),
            language=str(d["language"]),
            duration=duration,
            speaker=None if d.get("speaker") is None else str(d["speaker"]),
            source=None if d.get("source") is None else str(d["source"]),
            meta=meta,
        )

    def audio_path(self, root: str | Path) -> Path:
        """The audio file, given the folder holding the manifest."""
        return Path(root) / self.audio

    def replace(self, **changes: Any) -> Utterance:
        """A copy with `changes` (manifests are not mutated in place)."""
        return dataclasses.replace(self, meta=dict(self.meta), **changes)


@dataclass
class Rejection:
    """An input that a stage could not use, and why. Written to rejected.jsonl; never fatal."""

    id: str
    stage: str  # "synth", "augment", "vad", "asr", ...
    reason: str  # human-readable: "CorruptAudioError: x.wav: not audio soundfile can decode"
    input: str | None = None  # the offending file or text, when there is one

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rejection:
        return cls(id=str(d["id"]), stage=str(d["stage"]), reason=str(d["reason"]), input=d.get("input"))


def _iter_lines(path: Path, skip_partial_tail: bool) -> Iterator[tuple[int, dict]]:
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    # A file written line by line ends with "\n": the last element is empty. Anything else is a
    # last line cut off mid-write by a killed run.
    tail_is_partial = lines and lines[-1] != b""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError as e:
            if skip_partial_tail and tail_is_partial and number == len(lines):
                return
            raise ManifestError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None


def iter_manifest(path: str | Path, *, skip_partial_tail: bool = False) -> Iterator[Utterance]:
    """Utterances of a manifest, lazily. Bad lines raise `ManifestError` with file and line."""
    path = Path(path)
    for number, d in _iter_lines(path, skip_partial_tail):
        if not isinstance(d, dict):
            raise ManifestError(f"{path}:{number}: expected a JSON object, got {type(d).__name__}")
        try:
            yield Utterance.from_dict(d)
        except ManifestError as e:
            raise ManifestError(f"{path}:{number}: {e}") from None


def read_manifest(path: str | Path, *, skip_partial_tail: bool = False) -> list[Utterance]:
    """All utterances of `path` (a manifest.jsonl, or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    return list(iter_manifest(path, skip_partial_tail=skip_partial_tail))


def read_rejections(path: str | Path) -> list[Rejection]:
    path = Path(path)
    if path.is_dir():
        path = path / REJECTED_NAME
    if not path.exists():
        return []
    return [Rejection.from_dict(d) for _, d in _iter_lines(path, skip_partial_tail=True)]


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> Path:
    """Write a whole manifest atomically (a temporary file renamed over the target)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for u in utterances:
            f.write(json.dumps(u.to_dict(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def truncate_partial_tail(path: str | Path) -> int:
    """Cut a last line left unfinished by a killed writer; returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        return len(data) - keep


class ManifestWriter:
    """Appends records to a JSONL file one whole line at a time, flushed after each write.

    Opening an existing file resumes it: a torn last line is removed first. Use as a
    context manager.
    """

    def __init__(self, path: str | Path, *, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_partial_tail(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        self._fsync = fsync

    def write(self, record: Utterance | Rejection | dict[str, Any]) -> None:
        d = record if isinstance(record, dict) else record.to_dict()
        # One write call per line keeps a kill from interleaving half-records.
        self._file.write(json.dumps(d, ensure_ascii=False) + "\n")
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- Parquet ---------------------------------------------------------------------------------

def to_arrow(utterances: Iterable[Utterance]):
    """A pyarrow Table: the core fields as columns, `meta` as a JSON string column."""
    import pyarrow as pa

    rows = list(utterances)
    return pa.table(
        {
            "id": pa.array([u.id for u in rows], pa.string()),
            "audio": pa.array([u.audio for u in rows], pa.string()),
            "text": pa.array([u.text for u in rows], pa.string()),
            "language": pa.array([u.language for u in rows], pa.string()),
            "duration": pa.array([u.duration for u in rows], pa.float64()),
            "speaker": pa.array([u.speaker for u in rows], pa.string()),
            "source": pa.array([u.source for u in rows], pa.string()),
            "meta": pa.array([json.dumps(u.meta, ensure_ascii=False) for u in rows], pa.string()),
        }
    )


def from_arrow(table) -> list[Utterance]:
    out = []
    for row in table.to_pylist():
        row = dict(row)
        meta = row.pop("meta", None)
        row["meta"] = json.loads(meta) if meta else {}
        out.append(Utterance.from_dict(row))
    return out


def write_parquet(path: str | Path, utterances: Iterable[Utterance]) -> Path:
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_arrow(utterances), path, compression="zstd")
    return path


def read_parquet(path: str | Path) -> list[Utterance]:
    import pyarrow.parquet as pq

    return from_arrow(pq.read_table(path))
