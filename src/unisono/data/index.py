"""A DuckDB index over manifests: find, count and sample clips by language, voice, tier, quality.

Each manifest added becomes rows of one table, `utterances`, keyed by (corpus, id). The
columns most queries need are promoted out of `meta`; the full `meta` stays as JSON, so any
other key is one `json_extract` away:

    corpus     name given when the manifest was added (default: its folder's name)
    id, text, language, duration, speaker, source
    audio      absolute path of the audio file
    origin     the part of `source` before the first ':' ("debian", "pypi", "github", ...)
    engine, voice, tier, quality, synthetic     from meta (NULL when absent)
    scores     meta["scores"] as JSON;  meta  the whole meta dict as JSON

>>> with MetadataIndex() as ix:                               # doctest: +SKIP
...     ix.add_manifest("corpus/synth")
...     ix.hours_by("language", "engine")
[{'language': 'en', 'engine': 'espeak-ng', 'clips': 9120, 'hours': 11.2}, ...]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from unisono.data.manifest import MANIFEST_NAME, Utterance, iter_manifest

# Columns callers may group or filter by (everything else would be an SQL injection surface).
GROUP_COLUMNS = ("corpus", "language", "speaker", "origin", "engine", "voice", "tier", "synthetic")

SCHEMA = """
CREATE TABLE IF NOT EXISTS utterances (
    corpus VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    audio VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    language VARCHAR NOT NULL,
    duration DOUBLE NOT NULL,
    speaker VARCHAR,
    source VARCHAR,
    origin VARCHAR,
    engine VARCHAR,
    voice VARCHAR,
    tier VARCHAR,
    quality DOUBLE,
    synthetic BOOLEAN,
    scores JSON,
    meta JSON,
    PRIMARY KEY (corpus, id)
)
"""


def _row(u: Utterance, corpus: str, root: Path) -> tuple:
    m = u.meta
    quality = m.get("quality")
    synthetic = m.get("synthetic")
    return (
        corpus,
        u.id,
        str((root / u.audio).resolve()),
        u.text,
        u.language,
        u.duration,
        u.speaker,
        u.source,
        u.source.split(":", 1)[0] if u.source and ":" in u.source else None,
        m.get("engine"),
        m.get("voice"),
        m.get("tier"),
        float(quality) if isinstance(quality, (int, float)) else None,
        bool(synthetic) if synthetic is not None else None,
        json.dumps(m["scores"]) if "scores" in m else None,
        json.dumps(m, ensure_ascii=False),
    )


class MetadataIndex:
    """DuckDB metadata index. `path=None` keeps it in memory; a file path persists it."""

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False):
        import duckdb

        self.path = None if path is None else Path(path)
        if self.path is not None and not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(self.path) if self.path else ":memory:", read_only=read_only)
        if not read_only:
            self.con.execute(SCHEMA)

    # --- building ----------------------------------------------------------------------------

    def add(self, utterances: Iterable[Utterance], *, root: str | Path, corpus: str, replace: bool = True) -> int:
        """Index `utterances` (audio paths relative to `root`) under `corpus`; returns rows added.

        With `replace`, the corpus's previous rows go first, so re-adding a grown manifest
        leaves no stale or duplicate rows.
        """
        import pyarrow as pa

        root = Path(root)
        rows = [_row(u, corpus, root) for u in utterances]
        names = ["corpus", "id", "audio", "text", "language", "duration", "speaker", "source", "origin",
                 "engine", "voice", "tier", "quality", "synthetic", "scores", "meta"]
        table = pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)}) if rows else None
        self.con.execute("BEGIN TRANSACTION")
        try:
            if replace:
                self.con.execute("DELETE FROM utterances WHERE corpus = ?", [corpus])
            if table is not None:
                self.con.register("_incoming", table)
                self.con.execute(
                    f"INSERT INTO utterances SELECT {', '.join(names[:-2])}, "
                    "CAST(scores AS JSON), CAST(meta AS JSON) FROM _incoming"
                )
                self.con.unregister("_incoming")
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        return len(rows)

    def add_manifest(self, manifest: str | Path, *, corpus: str | None = None, replace: bool = True) -> int:
        """Index a manifest.jsonl (or the folder holding one). A torn last line is skipped."""
        path = Path(manifest)
        if path.is_dir():
            path = path / MANIFEST_NAME
        corpus = corpus or path.parent.name
        return self.add(iter_manifest(path, skip_partial_tail=True), root=path.parent, corpus=corpus, replace=replace)

    # --- querying ----------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Run any SQL over `utterances`; rows as dicts."""
        cur = self.con.execute(sql, params or [])
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def count(self) -> int:
        return self.con.execute("SELECT count(*) FROM utterances").fetchone()[0]

    def total_hours(self) -> float:
        return self.con.execute("SELECT coalesce(sum(duration), 0) / 3600 FROM utterances").fetchone()[0]

    def hours_by(self, *keys: str, where: str | None = None) -> list[dict[str, Any]]:
        """Clips and hours per combination of `keys` (columns from GROUP_COLUMNS), largest first."""
        if not keys:
            raise ValueError(f"name at least one column to group by: {', '.join(GROUP_COLUMNS)}")
        bad = [k for k in keys if k not in GROUP_COLUMNS]
        if bad:
            raise ValueError(f"cannot group by {', '.join(bad)}; choose from {', '.join(GROUP_COLUMNS)}")
        cols = ", ".join(keys)
        sql = (f"SELECT {cols}, count(*) AS clips, sum(duration) / 3600 AS hours FROM utterances "
               f"{'WHERE ' + where if where else ''} GROUP BY {cols} ORDER BY hours DESC, {cols}")
        return self.query(sql)

    def select(
        self,
        *,
        corpus: str | Sequence[str] | None = None,
        language: str | Sequence[str] | None = None,
        tier: str | Sequence[str] | None = None,
        engine: str | Sequence[str] | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        min_quality: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching every given filter (a list means any of), ordered by corpus and id.

        Each row has the index columns, with `meta` and `scores` decoded to dicts and `audio`
        an absolute path.
        """
        clauses: list[str] = []
        params: list[Any] = []
        for col, value in (("corpus", corpus), ("language", language), ("tier", tier), ("engine", engine)):
            if value is None:
                continue
            values = [value] if isinstance(value, str) else list(value)
            clauses.append(f"{col} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        for expr, value in (("duration >= ?", min_duration), ("duration <= ?", max_duration),
                            ("quality >= ?", min_quality)):
            if value is not None:
                clauses.append(expr)
                params.append(value)
        sql = "SELECT * FROM utterances"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY corpus, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self.query(sql, params)
        for r in rows:
            r["meta"] = json.loads(r["meta"]) if r["meta"] else {}
            r["scores"] = json.loads(r["scores"]) if r["scores"] else None
        return rows

    def utterances(self, **filters: Any) -> list[Utterance]:
        """`select(**filters)` as Utterance records (audio as an absolute path)."""
        return [
            Utterance(id=r["id"], audio=r["audio"], text=r["text"], language=r["language"],
                      duration=r["duration"], speaker=r["speaker"], source=r["source"], meta=r["meta"])
            for r in self.select(**filters)
        ]

    def to_parquet(self, path: str | Path) -> Path:
        """Export the whole index as one Parquet file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con.execute(f"COPY (SELECT * FROM utterances ORDER BY corpus, id) TO '{path}' (FORMAT parquet)")
        return path

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> MetadataIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
