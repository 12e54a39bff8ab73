"""Loss curves of training runs (their metrics.jsonl), one panel per logged loss, stages in sequence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}: not a training run folder")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line of a killed run
            continue
    return rows


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_runs(run_dirs: Sequence[str | Path], out_png: str | Path, window: int = 10, title: str | None = None) -> Path:
    """Main-head loss and MTP branch losses against the cumulative step across the runs given
    (e.g. align, sft-asr, mtp in order); stage and phase boundaries are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_main, ax_mtp) = plt.subplots(1, 2, figsize=(12, 4.2))
    offset = 0
    for run in run_dirs:
        rows = read_metrics(run)
        if not rows:
            continue
        stage = Path(run).name
        steps = [offset + r["step"] for r in rows]
        ax_main.plot(steps, smooth([r["loss_main"] for r in rows], window), label=f"{stage}: main head")
        for h in range(1, 6):
            key = f"loss_mtp{h}"
            pts = [(s, r[key]) for s, r in zip(steps, rows) if key in r]
            if pts:
                ax_mtp.plot([s for s, _ in pts], smooth([v for _, v in pts], window), label=f"{stage}: branch {h}")
        for a, b in zip(rows, rows[1:]):
            if a["phase"] != b["phase"]:
                for ax in (ax_main, ax_mtp):
                    ax.axvline(offset + b["step"] - 0.5, color="grey", lw=0.6, ls=":")
        offset = steps[-1]
        for ax in (ax_main, ax_mtp):
            ax.axvline(offset + 0.5, color="black", lw=0.8, ls="--")
    ax_main.set(xlabel="optimizer step (stages in sequence)", ylabel="cross-entropy (nats/token)", title="next-token loss")
    ax_mtp.set(xlabel="optimizer step (stages in sequence)", title="MTP branch losses (branch h predicts x(t+1+h))")
    for ax in (ax_main, ax_mtp):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"training loss, moving average over {window} steps", fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
