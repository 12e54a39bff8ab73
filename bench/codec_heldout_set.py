"""A held-out synthetic English evaluation set for the codec: the English clips of a synthetic
corpus whose text (lower-cased, punctuation dropped) occurs in none of the given manifests or
prepared codec data folders, the first --limit of them in corpus order. The audio stays where
it is; the new manifest points to it.

    unisono data synth --out corpus/synth_heldout3 --max-clips 200 --hours-zh 0 --seed 11 -j 1
    python bench/codec_heldout_set.py corpus/synth_heldout3/manifest.jsonl corpus/synth_heldout3_en --limit 150 \\
        --exclude corpus/codec_data4 --exclude corpus/synth_clean2/manifest.jsonl \\
        --exclude corpus/synth_heldout_en/manifest.jsonl --exclude corpus/codec_dev/manifest.jsonl \\
        --exclude corpus/codec_data/test-en/manifest.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path


def key(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def texts_of(path: Path) -> set[str]:
    """The texts of a manifest, or of a prepared codec data folder's clips."""
    rows = path / "clips.jsonl" if path.is_dir() else path
    return {key(json.loads(line)["text"]) for line in open(rows, encoding="utf-8")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path, help="the synthetic corpus's manifest")
    ap.add_argument("out", type=Path, help="folder of the new set (manifest.jsonl)")
    ap.add_argument("--exclude", type=Path, action="append", default=[], help="a manifest or codec data folder; repeatable")
    ap.add_argument("--limit", type=int, default=150)
    args = ap.parse_args()
    seen = set().union(*(texts_of(p) for p in args.exclude)) if args.exclude else set()
    args.out.mkdir(parents=True, exist_ok=True)
    kept = 0
    with open(args.out / "manifest.jsonl", "w", encoding="utf-8") as f:
        for line in open(args.manifest, encoding="utf-8"):
            row = json.loads(line)
            if row["language"] != "en" or key(row["text"]) in seen or kept >= args.limit:
                continue
            seen.add(key(row["text"]))  # one clip per text
            row["audio"] = os.path.relpath(args.manifest.parent / row["audio"], args.out)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            kept += 1
    print(f"{args.out / 'manifest.jsonl'}: {kept} clips")


if __name__ == "__main__":
    main()
