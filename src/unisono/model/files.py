"""Writing a checkpoint directory atomically, readable by everyone.

    with replace_directory(path, keep=("speech", "README.md")) as tmp:
        save_file(state, tmp / "model.safetensors")      # write everything into tmp
    # path now holds tmp's files (and what `keep` named from the old path), or is untouched on error

The files are assembled in a hidden sibling folder and renamed into place, so a reader never
sees a half-written checkpoint. mkdtemp and some writers create private (0600/0700) entries;
a checkpoint is meant to be shared, so the folder becomes 0755 and its files 0644.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence


@contextlib.contextmanager
def replace_directory(directory: str | Path, keep: Sequence[str] = ()) -> Iterator[Path]:
    """Yield an empty folder to write into; on success it replaces `directory`, carrying over
    the entries of the old `directory` named in `keep` (files or folders) that were not rewritten."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        for f in tmp.iterdir():
            if f.is_file():
                os.chmod(f, 0o644)
        for name in keep:
            old_entry, new_entry = directory / name, tmp / name
            if new_entry.exists():
                continue
            if old_entry.is_dir():
                shutil.copytree(old_entry, new_entry)
            elif old_entry.is_file():
                shutil.copy2(old_entry, new_entry)
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["replace_directory"]
