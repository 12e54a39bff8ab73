"""Corpus statistics from the metadata index: hours per language, engine, voice and tier, and a plot."""

from __future__ import annotations

from pathlib import Path

from unisono.data.index import MetadataIndex

# The breakdowns `unisono data stats` prints, each a tuple of index columns.
BREAKDOWNS: tuple[tuple[str, ...], ...] = (("language",), ("language", "engine"), ("tier",), ("corpus", "language"))


def duration_histogram(index: MetadataIndex, bin_s: float = 1.0) -> list[dict]:
    """Clips per duration bin and language: [{"language", "bin_start_s", "clips"}]."""
    return index.query(
        "SELECT language, floor(duration / ?) * ? AS bin_start_s, count(*) AS clips FROM utterances "
        "GROUP BY language, bin_start_s ORDER BY language, bin_start_s", [bin_s, bin_s])


def augmentation_hours(index: MetadataIndex) -> list[dict]:
    """Clips and hours per augmentation kind and language ("clean": none applied).

    Only clips whose meta has an `augment` list (synthetic ones) count.
    """
    return index.query("""
        WITH clips AS (
            SELECT language, duration, CAST(json_extract(meta, '$.augment') AS JSON[]) AS steps
            FROM utterances WHERE json_extract(meta, '$.augment') IS NOT NULL),
        kinds AS (
            SELECT language, duration, json_extract_string(unnest(steps), '$.kind') AS kind FROM clips
            UNION ALL
            SELECT language, duration, 'clean' AS kind FROM clips WHERE len(steps) = 0)
        SELECT kind, language, count(*) AS clips, sum(duration) / 3600 AS hours
        FROM kinds GROUP BY kind, language ORDER BY kind, language""")


def plot_stats(index: MetadataIndex, path: str | Path, title: str = "corpus") -> Path:
    """One PNG: hours by engine and language, by tier, and the clip-duration histogram."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))

    rows = index.hours_by("engine", "language")
    engines = sorted({str(r["engine"]) for r in rows})
    languages = sorted({r["language"] for r in rows})
    bottom = np.zeros(len(engines))
    for lang in languages:
        h = np.array([sum(r["hours"] for r in rows if str(r["engine"]) == e and r["language"] == lang) for e in engines])
        axes[0].bar(engines, h, bottom=bottom, label=lang)
        bottom += h
    axes[0].set_title("hours by engine")
    axes[0].set_ylabel("hours")
    axes[0].legend()

    tiers = index.hours_by("tier", "language")
    names = sorted({str(r["tier"]) for r in tiers})
    bottom = np.zeros(len(names))
    for lang in languages:
        h = np.array([sum(r["hours"] for r in tiers if str(r["tier"]) == t and r["language"] == lang) for t in names])
        axes[1].bar(names, h, bottom=bottom, label=lang)
        bottom += h
    axes[1].set_title("hours by tier")

    aug = augmentation_hours(index)
    kinds = sorted({r["kind"] for r in aug})
    bottom = np.zeros(len(kinds))
    for lang in languages:
        h = np.array([sum(r["hours"] for r in aug if r["kind"] == k and r["language"] == lang) for k in kinds])
        axes[2].bar(kinds, h, bottom=bottom, label=lang)
        bottom += h
    axes[2].set_title("hours by augmentation (a clip may have several)")
    axes[2].tick_params(axis="x", labelrotation=30)

    hist = duration_histogram(index)
    for lang in languages:
        xs = [r["bin_start_s"] for r in hist if r["language"] == lang]
        ys = [r["clips"] for r in hist if r["language"] == lang]
        axes[3].step(xs, ys, where="post", label=lang)
    axes[3].set_title("clip durations")
    axes[3].set_xlabel("seconds")
    axes[3].set_ylabel("clips")
    axes[3].legend()

    fig.suptitle(f"{title}: {index.total_hours():.1f} h in {index.count()} clips")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
