"""How well does each codebook hold each source's tokens? No training, no audio: the stored features of a
prepared data folder, a few codebooks, and per source (each --source manifest; the rest of the folder is
"other", the synthetic clips) the share of the token features' spread a codebook's entries leave unexplained:

    mean    the mean of the token's two encoder frames (all the shipped tokens quantise)
    diff    their difference, where the folder was prepared with --frame-difference W > 0

Each codebook assigns tokens by its own pooling: a mean-only codebook by the mean half, a [mean, w x
difference] codebook by the whole feature, rescaled from the folder's W. Where a source's tokens lose
more of the mean under one codebook than another, its speech is drawn more coarsely there.

    python bench/codec_codebook_fit.py corpus/cd_w1 shipped=src/unisono/assets/unisono-tiny/speech pd1=runs/pd1 \\
        --source an4=../shared/data/real_speech_train/an4_train/manifest.jsonl \\
        --source speechocean=../shared/data/real_speech_train/speechocean762_train/manifest.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from unisono.codec.tokenizer import quantize
    from unisono.train.codec_data import CodecData
    from unisono.train.codec_train import read_codebook

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a folder written by `unisono codec prepare`")
    ap.add_argument("codebooks", nargs="+", help="NAME=PATH: an exported codec folder or a run folder")
    ap.add_argument("--source", action="append", default=[], help="NAME=MANIFEST: the folder's clips from this manifest")
    ap.add_argument("--layer", type=int, default=3, help="the encoder layer the codebooks quantise")
    ap.add_argument("--clips", type=int, default=400, help="clips drawn per source")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = ap.parse_args()

    data = CodecData(args.data, layer=args.layer)
    half = data.features.shape[1] // (2 if data.frame_difference > 0 else 1)
    sources = [s.split("=", 1) for s in args.source]
    held = {name: {json.loads(line)["id"] for line in open(m) if line.strip()} for name, m in sources}
    groups: dict[str, list[int]] = {name: [] for name in held} | {"other": []}
    for i, clip in enumerate(data.clips):
        groups[next((name for name, ids in held.items() if clip["id"] in ids), "other")].append(i)
    codebooks = {name: read_codebook(Path(p)) for name, p in (c.split("=", 1) for c in args.codebooks)}
    for name, book in codebooks.items():
        width, w = book.centroids.shape[1], book.frame_difference
        if width not in (half, 2 * half) or (w > 0 and data.frame_difference == 0):
            raise SystemExit(f"{name}: a codebook of {width}-wide entries (frame difference {w}) cannot be "
                             f"read on {args.data} ({data.features.shape[1]} wide, frame difference {data.frame_difference})")

    rng = np.random.default_rng(0)
    figures: dict[str, dict] = {}
    for group, clips in groups.items():
        if not clips:
            continue
        picks = rng.choice(clips, min(args.clips, len(clips)), replace=False)
        x = torch.from_numpy(np.concatenate([np.asarray(data.features_of(int(i)), dtype=np.float32) for i in picks]))
        mean, diff = x[:, :half], (x[:, half:] / data.frame_difference if data.frame_difference > 0 else None)
        spread = lambda v: ((v - v.mean(0)) ** 2).sum(1).mean()  # noqa: E731
        figures[group] = {"tokens": len(x)}
        for name, book in codebooks.items():
            centroids, w = book.centroids, book.frame_difference
            feature = mean if w == 0 else torch.cat([mean, w * diff], 1)
            q = quantize(feature, centroids, book.bias)
            row = {"mean": float(((mean - centroids[q, :half]) ** 2).sum(1).mean() / spread(mean))}
            if w > 0:
                row["diff"] = float(((diff - centroids[q, half:] / w) ** 2).sum(1).mean() / spread(diff))
            p = np.bincount(q.numpy(), minlength=len(centroids)) / len(q)
            row["used"], row["perplexity"] = int((p > 0).sum()), math.exp(-(p[p > 0] * np.log(p[p > 0])).sum())
            figures[group][name] = row
    print(f"{'source':14s}{'tokens':>8s}  " + "  ".join(f"{n:>30s}" for n in codebooks))
    print(f"{'':22s}  " + "  ".join(f"{'mean   diff   used  perplexity':>30s}" for _ in codebooks))
    for group, f in figures.items():
        cells = []
        for name in codebooks:
            r = f[name]
            cells.append(f"{r['mean']:.3f}  {r.get('diff', float('nan')):.3f}  {r['used']:5d}  {r['perplexity']:10.0f}")
        print(f"{group:14s}{f['tokens']:8d}  " + "  ".join(f"{c:>30s}" for c in cells))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"data": str(args.data), "codebooks": args.codebooks, "sources": args.source,
                                        "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
