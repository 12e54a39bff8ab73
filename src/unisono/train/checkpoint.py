"""Training checkpoints: everything needed to continue a run exactly, written atomically.

    RUN/checkpoints/step-00000200/
        model.pt      full model state dict (gathered from every process when sharded)
        optim.pt      optimizer state (keyed by parameter name) and LR scheduler state
        rng.pt        Python, NumPy and torch RNG states of every process
        state.json    step, phase, step in phase, data-loader position (micro-batch index)

A checkpoint is assembled in a hidden temporary folder beside the others and renamed into
place only when complete, so a run killed at any moment (kill -9 included) leaves the last
complete checkpoint untouched; leftovers of an interrupted write are removed on resume.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
PREFIX = "step-"
STATE_FILE = "state.json"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{PREFIX}{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def remove_partial(run_dir: str | Path) -> list[Path]:
    """Delete temporary folders left by a write that was interrupted."""
    root = Path(run_dir) / CHECKPOINTS
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def write_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write one checkpoint atomically, then keep only the newest `keep` (0: all)."""
    final = checkpoint_path(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(model_state, tmp / "model.pt")
    torch.save(optim_state, tmp / "optim.pt")
    torch.save(rng_states, tmp / "rng.pt")
    (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
    for f in tmp.iterdir():  # on disk before the rename makes the checkpoint visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # a checkpoint of the same step from a run that was then killed
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_FILE).read_text())


def load_tensors(path: str | Path, name: str) -> Any:
    # our own files; they hold plain tensors and Python containers only
    return torch.load(Path(path) / name, map_location="cpu", weights_only=False)


# ---- RNG ----------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
