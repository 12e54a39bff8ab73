"""Does a speech-enhancement front end give degraded audio its clean tokens back? Held-out clean clips of a
prepared folder, degraded by the corpus generator's own length-keeping transforms (noise, reverberation,
telephone band, limiting, gain), then enhanced before the shipped tokenizer: the share of each clip's tokens
that are the clean clip's, by what the degradation was.

Front ends: spectral gating (`noisereduce`, stationary and not, at several strengths) against additive
noise, weighted prediction error dereverberation (`nara_wpe`) against reverberation, and the two chained.
The clean clips go through each front end too, since a tokenizer cannot know which clips need it.
Neither package is a dependency of unisono; for this measurement:

    pip install noisereduce==3.0.3 nara_wpe==0.0.11
    python bench/codec_enhanced_tokens.py corpus/cd_b --only corpus/synth_fresh7/manifest.jsonl --clips 200 \\
        --out docs/codec/noise/enhanced-tokens.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Callable

import numpy as np

SAMPLE_RATE = 16000


def front_ends() -> dict:
    try:
        import noisereduce
        from nara_wpe.utils import istft, stft
        from nara_wpe.wpe import wpe
    except ImportError as e:
        raise SystemExit(f"{e.name} is missing: pip install noisereduce==3.0.3 nara_wpe==0.0.11") from None

    def gate(strength: float, stationary: bool = True):
        def run(x: np.ndarray) -> np.ndarray:
            return noisereduce.reduce_noise(y=x, sr=SAMPLE_RATE, stationary=stationary, prop_decrease=strength,
                                            n_jobs=1).astype(np.float32)
        return run

    def dereverb(x: np.ndarray, taps: int = 10, delay: int = 3) -> np.ndarray:
        spec = stft(x[None], size=512, shift=128).transpose(2, 0, 1)          # (freq, channel, frame)
        out = istft(wpe(spec, taps=taps, delay=delay, iterations=3).transpose(1, 2, 0), size=512, shift=128)[0]
        return np.pad(out[: len(x)], (0, max(0, len(x) - len(out)))).astype(np.float32)

    return {
        "none": lambda x: x,
        "gate 0.3": gate(0.3),
        "gate 0.6": gate(0.6),
        "gate 1.0": gate(1.0),
        "gate 1.0, non-stationary": gate(1.0, stationary=False),
        "dereverberation": dereverb,
        "dereverberation + gate 0.3": lambda x: gate(0.3)(dereverb(x)),
    }


def shares_of_clean_tokens(data, clips: list[int], rng: np.random.Generator, cfg, rirs,
                           tokenizers: dict[str, Callable[[np.ndarray], np.ndarray]]) -> tuple[dict, list[str]]:
    """Each clip clean and degraded (`aligned_augment`, drawing from `rng`), tokenized by each of `tokenizers`; the
    first of them gives the clean clip's reference tokens. Returns {group: {tokenizer: per-clip shares of the
    reference tokens}} for the groups clean, degraded, "with KIND" and "only KIND", and the groups in table order."""
    from rich.progress import Progress

    from unisono.data.augment import DEGRADING_KINDS, aligned_augment

    reference = next(iter(tokenizers))
    shares: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with Progress() as bar:
        task = bar.add_task("tokenizing", total=len(clips))
        for i in clips:
            clean = data.audio_of(i)
            degraded = aligned_augment(clean, rng, cfg, rirs)
            kinds = sorted({s["kind"] for s in degraded.steps} & DEGRADING_KINDS)
            target = tokenizers[reference](clean)
            groups = ["degraded", *(f"with {k}" for k in kinds), *(["only " + kinds[0]] if len(kinds) == 1 else [])] \
                if kinds else []  # a chain that drew no degrading transform is a clean clip with a gain
            for name, tokenize in tokenizers.items():
                shares["clean"][name].append(1.0 if name == reference else float(np.mean(tokenize(clean) == target)))
                if groups:
                    share = float(np.mean(tokenize(degraded.audio) == target))
                    for g in groups:
                        shares[g][name].append(share)
            bar.advance(task)
    order = ["clean", "degraded", *sorted(g for g in shares if g.startswith("with")),
             *sorted(g for g in shares if g.startswith("only"))]
    return shares, order


def print_shares(shares: dict, order: list[str]) -> None:
    names = list(shares["clean"])
    print("| clips | n | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for g in order:
        print(f"| {g} | {len(shares[g][names[0]])} | " + " | ".join(f"{100 * np.mean(shares[g][m]):.1f}%" for m in names) + " |")


def main() -> None:
    import torch
    from unisono.data.augment import AugmentConfig, make_rir_bank
    from unisono.codec.codec import SpeechCodec, default_codec_path
    from unisono.train.codec_data import CodecData

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="a folder written by `unisono codec prepare` (its clean clips are degraded here)")
    ap.add_argument("--only", help="draw the clips from this source manifest (e.g. the synthetic ones)")
    ap.add_argument("--codec", help="a codec folder (default: the shipped one)")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seed", type=int, default=11, help="draws of clips and transforms")
    ap.add_argument("--room-seed", type=int, default=101, help="the room bank (the corpus generator's own is another)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    methods = front_ends()

    codec = SpeechCodec.load(args.codec or default_codec_path())
    try:
        data = CodecData(args.data)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    rng = np.random.default_rng(args.seed)
    pool = sorted(data.indices_from(args.only)) if args.only else list(range(len(data)))
    chosen = rng.choice(pool, size=min(len(pool), args.clips), replace=False).tolist()
    cfg = AugmentConfig()
    rirs = make_rir_bank(cfg.rir_bank_size, seed=args.room_seed)

    tokenizers = {name: (lambda audio, enhance=enhance: codec.tokenize(enhance(audio)).numpy())
                  for name, enhance in methods.items()}
    shares, order = shares_of_clean_tokens(data, chosen, rng, cfg, rirs, tokenizers)
    print_shares(shares, order)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"data": args.data, "only": args.only, "clips": len(chosen), "seed": args.seed,
                       "room_seed": args.room_seed,
                       "share_of_clean_tokens": {g: {m: {"clips": len(v), "mean": float(np.mean(v))}
                                                     for m, v in shares[g].items()} for g in order}}, f, indent=2)


if __name__ == "__main__":
    main()
