"""Re-render the codec's synthetic evaluation sets from their clip ids, on a fresh machine.

The sets were drawn from synthetic corpora whose sentence order depends on the text pool
installed at the time, but a clip is a pure function of (corpus seed, sentence id, rendition)
(`unisono.data.synth.job_stream`). `docs/codec/sets/<name>.jsonl` keeps each clip's id, seed
and duration; this script renders them again and checks every duration to the sample:

    python bench/codec_sets.py corpus/synth_heldout_en docs/codec/sets/synth_heldout_en.jsonl
    python bench/codec_sets.py corpus/codec_dev docs/codec/sets/codec_dev.jsonl
    python bench/codec_sets.py corpus/codec_data/test-en docs/codec/sets/test-en.jsonl

It needs the text pool of docs/data/synth.md (Debian fortunes and docs) and the three engines.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    import unisono.data.synth as synth
    from unisono.data.engines import available_voices
    from unisono.data.manifest import Utterance, write_manifest
    from unisono.data.text import TextConfig, collect_sentences

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for manifest.jsonl and audio/")
    ap.add_argument("ids", type=Path, help="JSON lines: id, seed, duration (seconds, or null where not recorded)")
    ap.add_argument("--skip-missing", action="store_true",
                    help="render the clips whose sentences this machine's text pool holds and name the others")
    args = ap.parse_args()

    rows = [json.loads(line) for line in args.ids.read_text().splitlines() if line.strip()]
    wanted = {r["id"].split("-")[1] for r in rows}
    sentences = {s.id: s for s in collect_sentences(TextConfig()) if s.id in wanted}
    missing = sorted(wanted - sentences.keys())
    if missing and args.skip_missing:
        print(f"{len(missing)} sentences are not in this machine's text pool; their clips are left out: {missing}")
        rows = [r for r in rows if r["id"].split("-")[1] in sentences]
    elif missing:
        raise SystemExit(f"{len(missing)} sentences are not in this machine's text pool (install the packages "
                         f"of docs/data/synth.md): {missing[:5]}")
    languages = sorted({r["id"].split("-")[0] for r in rows})
    voices = available_voices(tuple(languages), synth.ENGINES)

    args.out.mkdir(parents=True, exist_ok=True)
    rirs: dict[int, Path] = {}
    mismatched = []
    utterances = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            language, sentence_id, rendition = row["id"].split("-")
            seed = int(row["seed"])
            cfg = synth.SynthConfig(out_dir=Path(tmp) / f"seed{seed}", seed=seed, max_clips={language: 1})
            if seed not in rirs:  # the room responses of augmentation are drawn from the corpus seed
                cfg.out_dir.mkdir(parents=True)
                synth.prepare_rirs(cfg)
                rirs[seed] = cfg.out_dir
            by_engine = {e: [v for v in voices if v.engine == e and v.language == language] for e in synth.ENGINES}
            jobs = synth.job_stream([sentences[sentence_id]], by_engine, cfg)
            job = next(j for j in jobs if j["rendition"] == int(rendition))
            result = synth.render_job(job, str(cfg.out_dir), synth.worker_settings(cfg))
            if "utterance" not in result:
                raise SystemExit(f"{row['id']}: {result['rejection']}")
            u = result["utterance"]
            src = cfg.out_dir / u["audio"]
            dst = args.out / u["audio"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.replace(dst)
            if row.get("duration") is not None and abs(u["duration"] - row["duration"]) > 1e-4:
                mismatched.append((row["id"], row["duration"], u["duration"]))
            utterances.append(Utterance.from_dict(u))
    write_manifest(args.out / synth.MANIFEST_NAME, utterances)  # replaces an earlier run's
    print(f"{len(utterances)} clips written to {args.out / synth.MANIFEST_NAME}")
    if mismatched:
        raise SystemExit(f"{len(mismatched)} clips differ in length from the recorded set "
                         f"(engine versions?): {mismatched[:5]}")


if __name__ == "__main__":
    main()
