"""Codec reports side by side on the clips where no one looped: `unisono eval codec` reports of
several codecs on the same sets, scored again on the clips where neither the original nor any
codec's resynthesis made the recogniser run away (insert more words than the reference holds):

    python bench/codec_runaway_split.py codec9b=docs/codec/eval-codec9b-remeasured/results.json \
        cyc1=docs/codec/eval-cyc1/results.json shipped=docs/codec/eval/results.json

With --by-condition each set is also split by the synthetic clips' engine and by whether the clip
was degraded (noise, reverberation, telephone band, limiting; louder or faster counts as clean),
read from the set's manifest: where the resynthesis loses its words; then the clean and the degraded clips
as two halves, with each codec's gap had one half lost nothing. With --check the reports' check
recogniser (`unisono eval codec --check-recognizer NAME`) is scored instead of the main one, its own
runaway clips set aside.

With --intervals each set also gets, on all its clips (runaway ones included, as in the headline) and on those
where none loops, each
codec's gap to the original and each later codec's difference from the first, with 95% intervals of a
paired bootstrap over the clips (`unisono.eval.metrics.difference_interval`): whether a set of this
size can tell the two apart.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def condition_of(row: dict) -> str:
    """'engine clean' or 'engine degraded' for a synthetic manifest row, 'real' otherwise."""
    from unisono.data.augment import is_degraded

    meta = row.get("meta") or {}
    if not meta.get("synthetic"):
        return "real"
    return f"{meta.get('engine', '?')} {'degraded' if is_degraded(meta.get('augment', [])) else 'clean'}"


def rates(counts: dict, ids: list[str]) -> str:
    """'original X%; name Y%, ...' over these clips (the original audio's counts are those of the first report)."""
    from unisono.eval.metrics import total

    first = next(iter(counts.values()))
    resynth = ", ".join(f"{name} {100 * total([c[k][1] for k in ids]).rate:.1f}%" for name, c in counts.items())
    return f"original {100 * total([first[k][0] for k in ids]).rate:.1f}%; {resynth}"


def main() -> None:
    from unisono.eval.codec import is_runaway
    from unisono.eval.metrics import count_errors
    from unisono.eval.normalize import default_scoring_name, make_scoring

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", metavar="NAME=RESULTS_JSON")
    ap.add_argument("--by-condition", action="store_true", help="also split each set by engine and degradation")
    ap.add_argument("--check", action="store_true", help="score the check recogniser's transcripts instead")
    ap.add_argument("--intervals", action="store_true", help="gaps and differences with 95%% bootstrap intervals")
    args = ap.parse_args()
    reports = {name: json.load(open(path)) for name, path in (r.split("=", 1) for r in args.reports)}
    first = next(iter(reports.values()))
    original, resynth = ("check_original", "check_resynth") if args.check else ("hyp_original", "hyp_resynth")
    for i, eval_set in enumerate(first["sets"]):
        score = make_scoring(default_scoring_name(eval_set["name"], "en"))
        counts = {}  # report -> clip id -> (original, resynthesis) error counts
        for name, report in reports.items():
            s = report["sets"][i]
            if s["name"] != eval_set["name"]:
                raise SystemExit(f"{name}: set {i} is {s['name']}, not {eval_set['name']}")
            if args.check and not s.get("check_recognizer"):
                raise SystemExit(f"{name}: set {s['name']} was scored without --check-recognizer")
            ref = {c["id"]: score.normalize(c["reference"]) for c in s["clips"]}
            counts[name] = {c["id"]: (count_errors(ref[c["id"]], score.normalize(c[original]), score.unit),
                                      count_errors(ref[c["id"]], score.normalize(c[resynth]), score.unit))
                            for c in s["clips"]}
        ids = [k for k in counts[next(iter(counts))]
               if all(k in c for c in counts.values()) and not any(is_runaway(x) for c in counts.values() for x in c[k])]
        recognizer = f" ({eval_set['check_recognizer']})" if args.check else ""
        print(f"{eval_set['name']}{recognizer}: {len(ids)} of {len(eval_set['clips'])} clips; {rates(counts, ids)}")
        if args.by_condition:
            with open(eval_set["manifest"]) as f:
                rows = {row["id"]: row for row in map(json.loads, f)}
            groups = defaultdict(list)
            for k in ids:
                groups[condition_of(rows.get(k, {}))].append(k)
            for group, members in sorted(groups.items()):
                print(f"    {group}: {len(members)} clips; {rates(counts, members)}")
            print_halves(counts, ids, {k for k in ids if condition_of(rows.get(k, {})).endswith("degraded")})
        if args.intervals:
            print_intervals(counts, [k for k in counts[next(iter(counts))] if all(k in c for c in counts.values())], "")
            print_intervals(counts, ids, " where none loops")


def print_halves(counts: dict, ids: list[str], degraded: set[str]) -> None:
    """The clean and the degraded clips as two halves, each with its share of the reference words, and each codec's
    gap had one half lost nothing (its resynthesis scored as its original): which half the gap lives in."""
    from unisono.eval.metrics import total

    if not degraded or degraded >= set(ids):
        return  # one half only (a real or an all-clean set): nothing to split
    first = next(iter(counts.values()))
    words = total([first[k][0] for k in ids]).reference_length
    for half, members in (("clean", [k for k in ids if k not in degraded]), ("degraded", [k for k in ids if k in degraded])):
        if members:
            share = total([first[k][0] for k in members]).reference_length / max(words, 1)
            print(f"    all {half}: {len(members)} clips, {100 * share:.0f}% of the words; {rates(counts, members)}")
    original = total([first[k][0] for k in ids]).rate
    for name, c in counts.items():
        gap = total([c[k][1] for k in ids]).rate - original
        if_clean = total([c[k][0] if k not in degraded else c[k][1] for k in ids]).rate - original
        if_degraded = total([c[k][0] if k in degraded else c[k][1] for k in ids]).rate - original
        print(f"    {name}: gap {100 * gap:+.1f}; with the clean clips lossless {100 * if_clean:+.1f}, "
              f"with the degraded clips lossless {100 * if_degraded:+.1f}")


def print_intervals(counts: dict, ids: list[str], where: str) -> None:
    from unisono.eval.metrics import difference_interval, format_difference, total

    names = list(counts)
    original = [counts[names[0]][k][0] for k in ids]
    for name in names:
        resynth = [counts[name][k][1] for k in ids]
        gap = total(resynth).rate - total(original).rate
        print(f"    {name} - original, {len(ids)} clips{where}: {format_difference(gap, difference_interval(original, resynth))}")
    first = [counts[names[0]][k][1] for k in ids]
    for name in names[1:]:
        resynth = [counts[name][k][1] for k in ids]
        difference = total(resynth).rate - total(first).rate
        print(f"    {name} - {names[0]}{where}: {format_difference(difference, difference_interval(first, resynth))}")

if __name__ == "__main__":
    main()
