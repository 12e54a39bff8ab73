"""The user cache: pretrained weights prepared once (a GGUF dequantised, parts joined), then read.

    $UNISONO_CACHE, else the user cache directory of "unisono" ($XDG_CACHE_HOME/unisono, i.e.
    ~/.cache/unisono on Linux, ~/Library/Caches/unisono on macOS):
      decoders/<name>-<sha256[:16]>/   config.json, model.safetensors (float32), tokenizer.json, source.json
      whisper/<name>-<sha256[:16]>/    model.bin, config.json, tokenizer.json (CTranslate2, joined parts)

Entries are named by the sha256 of what they were made from, so a cached entry is found
without reading the source again, and a different file never reuses it. An entry is written
in a hidden sibling folder and renamed into place, so an interrupted preparation leaves nothing
that looks finished; deleting the folder is always safe (the next start prepares it again).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE_ENV = "UNISONO_CACHE"
READY_FILE = "source.json"  # written last: an entry without it is incomplete


def cache_root() -> Path:
    """The cache directory ($UNISONO_CACHE overrides the platform's user cache directory)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("unisono", appauthor=False))


def entry_path(kind: str, name: str, sha256: str) -> Path:
    """Where the prepared form of a source lives: `kind` is "decoders" or "whisper"."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)[:60]
    return cache_root() / kind / f"{safe}-{sha256[:16]}"


def is_ready(entry: Path) -> bool:
    return (entry / READY_FILE).is_file()


def progress(message: str) -> None:
    """One line on stderr: a slow first start says what it does and that it happens once."""
    print(f"unisono: {message}", file=sys.stderr, flush=True)


__all__ = ["CACHE_ENV", "READY_FILE", "cache_root", "entry_path", "is_ready", "progress"]
