"""Evaluation sets: the project's manifests (`unisono.data.manifest`) read as named sets.

A set is a ``manifest.jsonl`` (or a folder holding one, or a ``.parquet`` manifest of the data
engine), one utterance per line, as in ``data/real_speech/<set>/manifest.jsonl``::

    {"id": "an406-fcaw-b", "audio": "wav/an406-fcaw-b.wav", "text": "RUBOUT G M E F THREE NINE",
     "language": "en", "duration": 4.0, "speaker": "fcaw"}

``audio`` is relative to the manifest's folder; ``text`` is the reference. A set is named after
its folder when the file is ``manifest.jsonl`` (``an4_test``), else after the file
(``dev.jsonl`` -> ``dev``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unisono.data.manifest import MANIFEST_NAME, ManifestError, read_manifest, read_parquet

__all__ = ["EvalSet", "ManifestError", "Utterance", "load_set", "resolve_manifest"]


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path  # absolute
    text: str  # the reference, as written in the manifest
    language: str = "en"
    duration: float | None = None  # seconds, as the manifest states it
    speaker: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class EvalSet:
    name: str
    manifest: Path  # as given (reports quote it)
    utterances: tuple[Utterance, ...]

    @property
    def language(self) -> str:
        """The language most utterances are in."""
        langs = [u.language for u in self.utterances]
        return max(set(langs), key=langs.count) if langs else "en"

    def head(self, limit: int | None) -> "EvalSet":
        if limit is None or limit >= len(self.utterances):
            return self
        return EvalSet(self.name, self.manifest, self.utterances[:limit])


def resolve_manifest(path: str | Path) -> Path:
    """A manifest file, or a set folder holding ``manifest.jsonl``."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            raise ManifestError(f"{path} is a folder without {MANIFEST_NAME}; pass the manifest file or a set folder")
        return path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}")
    return path


def load_set(path: str | Path, name: str | None = None) -> EvalSet:
    manifest = resolve_manifest(path)
    rows = read_parquet(manifest) if manifest.suffix == ".parquet" else read_manifest(manifest)
    base = manifest.parent.resolve()
    seen: set[str] = set()
    utterances = []
    for row in rows:
        if row.id in seen:  # results are keyed by id: a duplicate would hide a clip
            raise ManifestError(f"{manifest}: duplicate id {row.id!r}")
        seen.add(row.id)
        utterances.append(Utterance(row.id, row.audio_path(base), row.text, row.language, row.duration, row.speaker, row.meta))
    if not utterances:
        raise ManifestError(f"{manifest} holds no utterances")
    default_name = manifest.parent.resolve().name if manifest.name == MANIFEST_NAME else manifest.stem
    return EvalSet(name or default_name, manifest, tuple(utterances))
