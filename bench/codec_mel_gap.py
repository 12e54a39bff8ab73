"""Does the token-to-mel model generalise? Its log-mel L1 on clips it was trained on against
clips it never saw, for one or more codec folders (the voice comes from the clip itself, and the
tokens are the codec's own, as in resynthesis; only the mel is scored, not the vocoder).

    python bench/codec_mel_gap.py src/unisono/assets/unisono-tiny/speech runs/x/speech \\
        --data corpus/codec_data --set corpus/codec_data/test-en --set ../shared/data/real_speech/ljspeech_lj001

A large gap between the training clips and the held-out sets means the model memorised its
clips: more (varied) data helps more than more steps.
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np
import torch


def mel_l1(codec, audio: np.ndarray) -> float:
    tokens = codec.tokenize(audio)
    predicted = codec.tokens_to_mel(tokens, codec.speaker_embedding(audio))
    real = codec.mel(torch.from_numpy(audio).float())
    n = min(predicted.shape[-1], real.shape[-1])
    return float((predicted[:, :n] - real[:, :n]).abs().mean())


def main() -> None:
    from unisono.audio.io import load_audio
    from unisono.eval.manifest import load_set
    from unisono.codec.codec import SpeechCodec
    from unisono.train.codec_data import CodecData

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("codecs", nargs="+", help="codec folders")
    ap.add_argument("--data", action="append", default=[], help="a prepared training folder (`unisono codec prepare`)")
    ap.add_argument("--set", action="append", default=[], help="a held-out manifest or set folder")
    ap.add_argument("--clips", type=int, default=20, help="clips per set (training clips: a seeded random sample)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    sets: dict[str, list[np.ndarray]] = {}
    for folder in args.data:
        data = CodecData(folder)
        chosen = random.Random(0).sample(range(len(data)), min(args.clips, len(data)))
        sets[f"{folder} (training clips)"] = [data.audio_of(i) for i in chosen]
    for name in args.set:
        eval_set = load_set(name).head(args.clips)
        sets[name] = [load_audio(u.audio, max_duration_s=120) for u in eval_set.utterances]
    figures = {}
    for folder in args.codecs:
        codec = SpeechCodec.load(folder)
        figures[folder] = {name: float(np.mean([mel_l1(codec, a) for a in clips])) for name, clips in sets.items()}
    width = max(len(n) for n in sets)
    print(f"{'mel L1':<{width}}  " + "  ".join(args.codecs))
    for name, clips in sets.items():
        print(f"{name:<{width}}  " + "  ".join(f"{figures[f][name]:>{len(f)}.3f}" for f in args.codecs))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"clips": args.clips, "mel_l1": figures}, f, indent=2)


if __name__ == "__main__":
    main()
