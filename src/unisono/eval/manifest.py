"""Evaluation sets: JSONL manifests of audio paths and reference transcripts.

One JSON object per line, as in ``data/real_speech/<set>/manifest.jsonl``::

    {"id": "an406-fcaw-b", "audio": "wav/an406-fcaw-b.wav", "text": "RUBOUT G M E F THREE NINE",
     "language": "en", "duration": 4.0, "speaker": "fcaw"}

``audio`` is relative to the manifest's folder (or absolute); ``text`` is the reference. ``id``
defaults to the line number, ``language`` to "en". ``audio_filepath`` is read as ``audio`` so that
NeMo-style manifests load too. A set is named after its folder when the file is
``manifest.jsonl`` (``an4_test``), else after the file (``dev.jsonl`` -> ``dev``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.jsonl"


class ManifestError(ValueError):
    """A manifest that cannot be read: missing, bad JSON, or a row without audio/text."""


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path  # absolute
    text: str  # the reference, as written in the manifest
    language: str = "en"
    duration: float | None = None  # seconds, as the manifest states it
    speaker: str | None = None
    custom: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class EvalSet:
    name: str
    manifest: Path
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
    manifest = resolve_manifest(path)  # kept as given: reports quote it
    base = manifest.parent
    utterances: list[Utterance] = []
    seen: set[str] = set()
    with open(manifest, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{manifest}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{manifest}:{lineno}: expected a JSON object, got {type(row).__name__}")
            audio = row.get("audio", row.get("audio_filepath"))
            if not isinstance(audio, str) or not isinstance(row.get("text"), str):
                raise ManifestError(f"{manifest}:{lineno}: a row needs string fields 'audio' and 'text'")
            utt_id = str(row.get("id", lineno))
            if utt_id in seen:
                raise ManifestError(f"{manifest}:{lineno}: duplicate id {utt_id!r}")
            seen.add(utt_id)
            known = {"id", "audio", "audio_filepath", "text", "language", "duration", "speaker"}
            utterances.append(Utterance(
                id=utt_id,
                audio=(base / audio).resolve(),
                text=row["text"],
                language=str(row.get("language") or "en"),
                duration=float(row["duration"]) if isinstance(row.get("duration"), (int, float)) else None,
                speaker=row.get("speaker"),
                custom={k: v for k, v in row.items() if k not in known},
            ))
    if not utterances:
        raise ManifestError(f"{manifest} holds no utterances")
    default_name = base.name if manifest.name == MANIFEST_NAME else manifest.stem
    return EvalSet(name or default_name, manifest, tuple(utterances))
