"""Has a codec learnt its transcript-loss clips or the voices? The transcript loss's own measure (the
tokenizer's Whisper model teacher-forced on the clip's text, cross-entropy per text token) on the
resynthesis of clips the loss read in training and of clips of the same corpus it never read, beside the
same measure on their original audio (the two groups' own difficulty). A codec that generalises loses as
much on either group; one that fits its clips loses less on the clips it read.

The groups are a manifest's rows before and after `--split` (a corpus built by `unisono data synth` is a
pure function of its seed, so its first rows are the clips of a shorter build with the same seed):

    python bench/codec_transcript_seen.py corpus/synth_clean2/manifest.jsonl --split 1745 \\
        src/unisono/assets/unisono-tiny/speech runs/gan3/speech --clips 60
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def draw(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """`n` English clips under 8 s with a text, the same ones for every codec."""
    rows = [r for r in rows if r.get("language", "en").startswith("en") and r.get("duration", 0) < 8 and r.get("text", "").strip()]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def main() -> None:
    import numpy as np
    import torch

    from unisono.audio.io import load_audio
    from unisono.model.encoder import AudioEncoder
    from unisono.codec.codec import SpeechCodec
    from unisono.train.codec_train import TranscriptLoss

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("codecs", nargs="+", type=Path, help="codec folders")
    ap.add_argument("--split", type=int, required=True, help="rows before it: read in training; from it on: not")
    ap.add_argument("--clips", type=int, default=60, help="clips drawn from each group")
    ap.add_argument("--source", default="bundled:whisper-tiny.en", help="the Whisper model of the loss")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the per-clip figures here (JSON)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in open(args.manifest)]
    groups = {"read in training": draw(rows[: args.split], args.clips), "never read": draw(rows[args.split:], args.clips)}
    loss = TranscriptLoss(args.source, AudioEncoder.from_source(args.source))

    def cross_entropy(wave: np.ndarray, text: str) -> float:
        with torch.no_grad():
            return float(loss([torch.from_numpy(np.asarray(wave, dtype=np.float32))], [text], ["en"]))

    audio = {r["id"]: load_audio(args.manifest.parent / r["audio"], 16000) for g in groups.values() for r in g}
    codecs = {str(folder): SpeechCodec.load(folder) for folder in args.codecs}
    result: dict = {"manifest": str(args.manifest), "split": args.split, "groups": {}}
    for name, group in groups.items():
        per_clip = {r["id"]: {"original": cross_entropy(audio[r["id"]], r["text"])} for r in group}
        for folder, codec in codecs.items():
            for r in group:
                wave = audio[r["id"]]
                resynth = codec.detokenize(codec.tokenize(wave), codec.speaker_embedding(wave[: 6 * 16000]))
                per_clip[r["id"]][folder] = cross_entropy(resynth, r["text"])
        result["groups"][name] = per_clip
    width = max(map(len, codecs))
    print(f"{'cross-entropy per text token':<{width}}  " + "  ".join(f"{g:>16}" for g in groups))
    for column in ["original", *codecs]:
        means = [np.mean([c[column] for c in result["groups"][g].values()]) for g in groups]
        print(f"{column:<{width}}  " + "  ".join(f"{m:>16.3f}" for m in means))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
