"""Does the tokenizer's pooling throw away the words? A cheap proxy, before any detokenizer is trained.

A token covers two encoder frames (20 ms each) and four mel frames (10 ms each). The shipped tokenizer
quantises the *mean* of its two encoder frames, and bench/codec_mel_oracle.py found the words in how the
spectral envelope moves *within* a token: the difference of the two frames is exactly what the mean drops.
This script fits a k-means codebook on each of several poolings of the same frames,

    diff=W      the token's feature is [mean, W * (second frame - first frame)]
                (W=0: the shipped mean; W=0.5: the two frames stacked, up to scale)

then predicts the mel frames of held-out clips from each token's mean mel trajectory (4 frames; a lookup
table built on the other clips) and prints the L1 to the real mel, the L1 of the spectral envelopes
(12 cepstra), and the oracle's two figures of the envelope's movement within a token: how much the
prediction moves as a share of the real movement, and how far it is from the real movement as a share of
its size (1.0: no closer than an envelope held still over each token).

    python bench/codec_token_pooling.py corpus/synth_clean2/manifest.jsonl --clips 1200 --diff 0,0.5,1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))


def clean_rows(manifest: Path, language: str) -> list[dict]:
    from unisono.train.codec_data import CLEAN_AUGMENTATIONS

    rows = []
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        augment = (row.get("meta") or {}).get("augment") or []
        if row.get("language", language) == language and all(a.get("kind") in CLEAN_AUGMENTATIONS for a in augment):
            row["audio"] = str(manifest.parent / row["audio"])
            rows.append(row)
    return rows


def main() -> None:
    from sklearn.cluster import MiniBatchKMeans

    from codec_mel_oracle import envelope, motion_figures
    from unisono.audio.io import load_audio
    from unisono.codec.codec import SpeechCodec, default_codec_path
    from unisono.codec.config import MelConfig
    from unisono.codec.mel import MelSpectrogram
    from unisono.codec.tokenizer import SpeechTokenizer
    from unisono.train.codec_train import assign_tokens

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path, help="a manifest.jsonl of clips (clean English clips are used)")
    ap.add_argument("--codec", default=None, help="codec folder whose tokenizer (encoder, layer) is read; default: the shipped one")
    ap.add_argument("--diff", default="0,0.5,1", help="weights W of the frame difference, comma-separated")
    ap.add_argument("--codebook", type=int, default=1024)
    ap.add_argument("--clips", type=int, default=1200, help="clips used: 5/6 fit the codebook and the lookup, 1/6 are predicted")
    ap.add_argument("--frames", type=int, default=200_000, help="at most this many tokens fit the k-means")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = clean_rows(args.manifest, "en")
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in rng.choice(len(rows), min(args.clips, len(rows)), replace=False)]
    cut = len(rows) * 5 // 6

    shipped = SpeechCodec.load(args.codec or default_codec_path()).tokenizer
    config = shipped.config
    # the same encoder and layer, one "token" per encoder frame: the frames before pooling
    frames_of = SpeechTokenizer(replace(config, pool=1, codebook_size=1), encoder=shipped.encoder,
                                centroids=torch.zeros(1, shipped.centroids.shape[1]))
    mel = MelSpectrogram(MelConfig())
    upsample = config.samples_per_token // MelConfig().hop_length  # mel frames per token

    t0 = time.time()
    pairs, mels = [], []  # per clip: (T, 2, D) encoder frames of each token; (T, n_mels, upsample)
    for start in range(0, len(rows), 32):
        block = [load_audio(r["audio"]) for r in rows[start:start + 32]]
        for audio, f in zip(block, frames_of.features(block)):
            n = SpeechTokenizer.n_tokens(len(audio), config.samples_per_token)
            f = torch.cat([f, f[-1:].expand(max(0, 2 * n - len(f)), -1)])[: 2 * n]
            m = mel(torch.from_numpy(audio))
            n = min(n, m.shape[1] // upsample)
            pairs.append(f[: 2 * n].reshape(n, 2, -1).numpy())
            mels.append(m[:, : upsample * n].reshape(m.shape[0], n, upsample).permute(1, 0, 2).numpy())
    n_train_tokens = sum(len(p) for p in pairs[:cut])
    print(f"{len(rows)} clips ({cut} fit, {len(rows) - cut} predicted), {n_train_tokens} fitting tokens, "
          f"encoder frames in {time.time() - t0:.0f} s", flush=True)

    def flat(x: np.ndarray) -> torch.Tensor:  # (tokens, n_mels, upsample) -> (n_mels, frames)
        return torch.from_numpy(x).float().permute(1, 0, 2).reshape(x.shape[1], -1)

    def predict(tokens: list[np.ndarray]) -> dict:
        k = int(max(t.max() for t in tokens)) + 1
        sums, counts = np.zeros((k, *mels[0].shape[1:])), np.zeros(k)
        for t, m in zip(tokens[:cut], mels[:cut]):
            np.add.at(sums, t, m)
            np.add.at(counts, t, 1)
        means = sums / np.maximum(counts, 1)[:, None, None]
        err = env = size = 0.0
        moves, offs, weights = [], [], []
        for t, m in zip(tokens[cut:], mels[cut:]):
            seen = counts[t] > 0  # a token never seen in fitting predicts nothing: skip it
            pred = np.where(seen[:, None, None], means[t], m)
            err += np.abs(pred - m).sum()
            env += envelope(flat(pred - m), 12).abs().sum().item()
            size += m.size
            move, off = motion_figures(flat(pred), flat(m), upsample)
            moves.append(move)
            offs.append(off)
            weights.append(len(t))
        w = np.asarray(weights, dtype=float)
        return {"mel_l1": err / size, "envelope_l1": env / size,
                "moves": float(np.average(moves, weights=w)), "off_real_movement": float(np.average(offs, weights=w))}

    results = {"manifest": str(args.manifest), "clips": len(rows), "codebook": args.codebook, "variants": {}}
    none = predict([np.zeros(len(p), dtype=int) for p in pairs])
    print("no tokens (one mean trajectory for every token): mel L1 {mel_l1:.3f}, envelope L1 {envelope_l1:.3f}, "
          "moves {moves:.2f}, off the real movement {off_real_movement:.2f}".format(**none), flush=True)
    results["variants"]["none"] = none
    for w in (float(x) for x in args.diff.split(",")):
        t0 = time.time()
        feats = [np.concatenate([p.mean(1), w * (p[:, 1] - p[:, 0])], axis=1) if w else p.mean(1) for p in pairs]
        fit = np.concatenate(feats[:cut]).astype(np.float32)
        take = np.random.default_rng(0).choice(len(fit), min(args.frames, len(fit)), replace=False)
        km = MiniBatchKMeans(args.codebook, batch_size=8192, n_init=1, max_iter=30, random_state=0,
                             reassignment_ratio=0.001).fit(fit[take])
        centroids = torch.from_numpy(km.cluster_centers_.astype(np.float32))
        tokens = [assign_tokens(f.astype(np.float32), centroids).astype(int) for f in feats]
        used = len(np.unique(np.concatenate(tokens)))
        r = predict(tokens) | {"entries_used": used}
        results["variants"][f"diff={w:g}"] = r
        print(f"diff={w:g}: mel L1 {r['mel_l1']:.3f}, envelope L1 {r['envelope_l1']:.3f}, moves {r['moves']:.2f}, "
              f"off the real movement {r['off_real_movement']:.2f}, {used} entries used ({time.time() - t0:.0f} s)", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
