"""Tokens of degraded audio against clean targets: a run folder whose tokens.npy holds, for a share of
the synthetic clips of a prepared codec data folder, the tokens of the same clip after noise,
reverberation, a telephone line or a gain change (`unisono.data.augment`, with every transform that
keeps the clip's length), while the mel, waveform and features the losses compare with stay those of
the clean clip. A token-to-mel model trained on it learns to render what degraded audio's tokens
say as clean speech, which is what the codec is asked to do with a degraded held-out clip: its
tokens are degraded audio's, and its training had only seen clean audio's.

    python bench/codec_degraded_tokens.py corpus/cd_b runs/dgb --codec src/unisono/assets/unisono-tiny/speech \\
        --only corpus/synth_fresh7/manifest.jsonl --share 0.5 --seed 101

The run folder must already hold the clean tokens (`unisono codec fit-tokenizer DATA RUN --codebook-of CODEC`);
they are kept as tokens-clean.npy, and degraded.jsonl says which clip was degraded, and how.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np


def main() -> None:
    import torch
    from rich.progress import Progress

    from unisono.data.augment import AugmentConfig, aligned_augment, make_rir_bank
    from unisono.codec.codec import SpeechCodec
    from unisono.train.codec_data import CodecData
    from unisono.train.codec_train import TOKENS_FILE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a folder written by `unisono codec prepare`")
    ap.add_argument("run", type=Path, help="a run folder holding that folder's clean tokens.npy")
    ap.add_argument("--codec", type=Path, required=True, help="the codec folder whose tokenizer made the tokens")
    ap.add_argument("--only", type=Path, help="degrade only the clips of this source manifest (e.g. the synthetic ones)")
    ap.add_argument("--share", type=float, default=0.5, help="share of those clips to degrade")
    ap.add_argument("--seed", type=int, default=101, help="draws of clips, transforms and rooms (not an evaluation corpus's)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    data = CodecData(args.data)
    codec = SpeechCodec.load(args.codec)
    clean_path = args.run / "tokens-clean.npy"
    if not clean_path.exists() and not (args.run / TOKENS_FILE).exists():
        raise SystemExit(f"{args.run} holds no {TOKENS_FILE}: run `unisono codec fit-tokenizer {args.data} {args.run} "
                         f"--codebook-of {args.codec}` first")
    if not clean_path.exists():  # a rerun (a killed one too) starts again from the clean tokens
        shutil.copyfile(args.run / TOKENS_FILE, clean_path)
    tokens = np.load(clean_path)
    if len(tokens) != data.total_tokens:
        raise SystemExit(f"{clean_path} holds {len(tokens)} tokens, {args.data} {data.total_tokens}: not its tokens")

    rng = np.random.default_rng(args.seed)
    pool = sorted(data.indices_from(args.only)) if args.only else list(range(len(data)))
    chosen = sorted(rng.choice(pool, size=int(round(args.share * len(pool))), replace=False).tolist())
    cfg = AugmentConfig()
    rirs = make_rir_bank(cfg.rir_bank_size, seed=args.seed)
    log, same, checked = [], 0, 0
    with Progress() as bar:
        task = bar.add_task("degrading and tokenizing", total=len(chosen))
        for i in chosen:
            clip = data.clips[i]
            audio = data.audio_of(i)
            if checked < 20:  # the codec must give the stored clean tokens back, or the run's tokens are another codebook's
                stored = tokens[clip["feature_offset"]: clip["feature_offset"] + clip["tokens"]]
                same += int(np.mean(codec.tokenize(audio).numpy() == stored) > 0.95)
                checked += 1
            out = aligned_augment(audio, rng, cfg, rirs)  # the tokens must stay aligned with the clean clip's frames
            new = codec.tokenize(out.audio).numpy()
            if len(new) != clip["tokens"]:
                raise SystemExit(f"{clip['id']}: {len(new)} tokens from the degraded clip, {clip['tokens']} stored")
            stored = tokens[clip["feature_offset"]: clip["feature_offset"] + clip["tokens"]]
            log.append({"id": clip["id"], "steps": out.steps, "tokens_changed": float(np.mean(new != stored))})
            tokens[clip["feature_offset"]: clip["feature_offset"] + clip["tokens"]] = new
            bar.advance(task)
    if same < checked:
        raise SystemExit(f"{args.codec} gives the stored clean tokens of only {same} of {checked} clips: another codebook?")
    np.save(args.run / TOKENS_FILE, tokens)
    with open(args.run / "degraded.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in log)
    changed = np.mean([row["tokens_changed"] for row in log])
    print(f"{len(chosen)} of {len(pool)} clips degraded; {100 * changed:.0f}% of their tokens changed; "
          f"{args.run / TOKENS_FILE} written (the clean tokens: {clean_path})")


if __name__ == "__main__":
    main()
