"""Prompt files of the evaluation suites (`eval tts`, `eval dialogue`): JSON lines, one prompt a row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def read_prompt_file(path: Path, make: Callable[[dict], T]) -> list[T]:
    """Each row of a JSONL file made into a prompt by `make` (a ValueError or TypeError for a bad
    row); a broken row, or an id seen twice, is an error naming its line."""
    prompts: list[T] = []
    seen: set[str] = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("a row must be a JSON object")
            prompt = make(row)
            if prompt.id in seen:
                raise ValueError(f"id {prompt.id!r} appears twice")
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}, line {number}: {e}") from None
        seen.add(prompt.id)
        prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def dataclass_row(cls: type[T], row: dict[str, Any]) -> T:
    """`cls(**row)`, naming the fields the dataclass does not have."""
    unknown = set(row) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    return cls(**row)
