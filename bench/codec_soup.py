"""Does averaging token-to-mel weights help ("model soup")? Average the speaker encoder and
token-to-mel weights of several runs fine-tuned from the same start, and write a codec folder
that takes every other part (tokenizer, vocoder) from a base codec:

    python bench/codec_soup.py runs/soup src/unisono/assets/unisono-tiny/speech runs/codec9a runs/codec9b
    python bench/codec_soup.py runs/soup-xb src/unisono/assets/unisono-tiny/speech src/unisono/assets/unisono-tiny/speech runs/trb/speech
    python bench/codec_variants.py corpus/codec_dev src/unisono/assets/unisono-tiny/speech runs/soup --threads 1
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from unisono.codec.codec import SpeechCodec
    from unisono.train.codec_train import load_state

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="codec folder to write")
    ap.add_argument("base", help="codec folder giving the tokenizer and the vocoder")
    ap.add_argument("runs", nargs="+", help="run folders holding token2mel.pt, or exported codec folders")
    args = ap.parse_args()

    codec = SpeechCodec.load(args.base)
    states = []
    for run in args.runs:
        if (Path(run) / "token2mel.pt").exists():
            states.append(load_state(Path(run) / "token2mel.pt")["modules"])
        elif (Path(run) / "codec.safetensors").exists():
            exported = SpeechCodec.load(run)
            states.append({part: getattr(exported, part).state_dict() for part in ("speaker", "token2mel")})
        else:
            raise SystemExit(f"{run} holds neither token2mel.pt nor codec.safetensors")
    for part in ("speaker", "token2mel"):
        keys = states[0][part]
        getattr(codec, part).load_state_dict({k: sum(s[part][k].float() for s in states) / len(states) for k in keys})
    codec.save(args.out)
    print(f"{args.out}: the mean of {len(states)} token-to-mel models, the rest from {args.base}")


if __name__ == "__main__":
    main()
