"""What the transcript loss asks of a corpus's texts: the tokenizer's Whisper model, teacher-forced on
the *original* audio of a few clips of each manifest, as `TranscriptLoss` reads a resynthesis. The
cross-entropy per text token is given for the texts as written and in sentence case: what the audio
itself cannot lower is the part a codec trained under the loss would be asked for in vain.

    python bench/codec_transcript_text.py ../shared/data/real_speech_train/an4_train/manifest.jsonl \\
        ../shared/data/real_speech_train/speechocean762_train/manifest.jsonl corpus/synth_clean2/manifest.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    import torch

    from unisono.audio.io import load_audio
    from unisono.model.encoder import AudioEncoder
    from unisono.train.codec_train import TranscriptLoss

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifests", nargs="+", type=Path)
    ap.add_argument("--clips", type=int, default=20, help="clips drawn from each manifest (English, under 8 s)")
    ap.add_argument("--source", default="bundled:whisper-tiny.en", help="the Whisper model")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loss = TranscriptLoss(args.source, AudioEncoder.from_source(args.source))

    def cross_entropy(clips: list[tuple[Path, str]], spell) -> float:
        with torch.no_grad():
            return sum(float(loss([torch.from_numpy(load_audio(audio, 16000))], [spell(text)], ["en"]))
                       for audio, text in clips) / len(clips)

    for manifest in args.manifests:
        rows = [json.loads(line) for line in open(manifest)]
        random.Random(0).shuffle(rows)
        clips = [(manifest.parent / r["audio"], r["text"]) for r in rows
                 if r.get("language", "en").startswith("en") and r.get("duration", 0) < 8 and r.get("text", "").strip()]
        clips = clips[: args.clips]
        as_written, sentence = cross_entropy(clips, str), cross_entropy(clips, lambda t: t.lower().capitalize())
        print(f"{manifest}: {len(clips)} clips; cross-entropy per token {as_written:.2f} as written, "
              f"{sentence:.2f} in sentence case")


if __name__ == "__main__":
    main()
