"""Word error rates of the variants of several `bench/codec_variants.py --out` files, all on the
clips of the set where none of them, nor the original audio, looped (a recogniser's runaway clip
can outweigh the rest, and each file otherwise drops its own):

    python bench/codec_common_clips.py docs/codec/variants-dev-cyc1g.json docs/codec/variants-dev-self.json

The files must score the same set, clip for clip (the same set and --limit). With --intervals, each
variant's difference from the first variant after the original, with the 95% interval of a paired
bootstrap over those clips (`unisono.eval.metrics.difference_interval`).
"""

from __future__ import annotations

import argparse
import json


def load(path: str) -> dict:
    try:
        with open(path) as f:
            run = json.load(f)
        run["set"], run["per_clip"][0]["hyp"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise SystemExit(f"{path}: not a `bench/codec_variants.py --out` file ({type(e).__name__}: {e})") from None
    return run


def main() -> None:
    from unisono.eval.codec import is_runaway
    from unisono.data.augment import is_degraded
    from unisono.eval.metrics import count_errors, difference_interval, format_difference, total
    from unisono.eval.normalize import default_scoring_name, make_scoring

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--intervals", action="store_true", help="differences from the first variant, with 95%% intervals")
    ap.add_argument("--drop", action="append", default=[], metavar="VARIANT", help="leave this variant out")
    ap.add_argument("--by-degradation", action="store_true", help="also score the clean and the degraded clips apart")
    args = ap.parse_args()
    runs = [load(f) for f in args.files]
    ids = [c["id"] for c in runs[0]["per_clip"]]
    for f, run in zip(args.files, runs):
        if [c["id"] for c in run["per_clip"]] != ids:
            raise SystemExit(f"{f} does not score the clips of {args.files[0]}, in that order")
    name = runs[0]["set"].rstrip("/").split("/")[-1]
    score = make_scoring(default_scoring_name(name, "en"))
    counts: dict[str, list] = {}
    for run in runs:
        for variant in run["per_clip"][0]["hyp"]:
            if variant in counts or variant in args.drop:  # the original audio, in every file: scored once
                continue
            counts[variant] = [count_errors(score.normalize(c["reference"]), score.normalize(c["hyp"][variant]), score.unit)
                               for c in run["per_clip"]]
    keep = [i for i in range(len(ids)) if not any(is_runaway(cs[i]) for cs in counts.values())]
    print(f"{name}: the {len(keep)} clips of {len(ids)} where no variant loops")
    for variant, cs in counts.items():
        print(f"  {100 * total([cs[i] for i in keep]).rate:6.1f}%  {variant}")
    if args.by_degradation:
        with open(runs[0]["set"].rstrip("/") + "/manifest.jsonl") as f:
            rows = {row["id"]: row for row in map(json.loads, f)}
        degraded = {k for k, row in rows.items() if is_degraded((row.get("meta") or {}).get("augment", []))}
        for label, part in (("clean", [i for i in keep if ids[i] not in degraded]), ("degraded", [i for i in keep if ids[i] in degraded])):
            print(f"  {label}, {len(part)} clips: " + ", ".join(f"{v} {100 * total([cs[i] for i in part]).rate:.1f}%" for v, cs in counts.items()))
    if args.intervals and len(counts) > 2:
        names = list(counts)
        first = [counts[names[1]][i] for i in keep]
        for variant in names[2:]:
            other = [counts[variant][i] for i in keep]
            difference = total(other).rate - total(first).rate
            print(f"  {variant} - {names[1]}: {format_difference(difference, difference_interval(first, other))}")


if __name__ == "__main__":
    main()
