"""Which encoder layer should the speech tokens quantise? A cheap proxy, before any detokenizer
is trained: fit a k-means codebook on each stored layer of a `unisono codec prepare` folder, then
predict the mel frames of held-out clips by the mean mel of each token (a lookup table built on
other clips). The lower the L1, the more of the sound the tokens carry; the L1 of the spectral
envelopes alone (12 cepstra, `spectral_envelope`) is the part that holds the words (bench/codec_mel_oracle.py). Also prints the share of
each layer's feature variance explained by the token's position in its clip alone (Whisper adds
absolute positions to its input, and a codebook that clusters by position is wasted).

    python bench/codec_token_layers.py corpus/codec_data --layers 3,4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    from sklearn.cluster import MiniBatchKMeans

    from unisono.codec.config import MelConfig
    from unisono.codec.mel import MelSpectrogram, spectral_envelope
    from unisono.train.codec_data import CodecData
    from unisono.train.codec_train import assign_tokens

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="folder written by `unisono codec prepare`")
    ap.add_argument("--layers", default="3,4")
    ap.add_argument("--codebook", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=120_000, help="frames the k-means is fitted on")
    ap.add_argument("--clips", type=int, default=1200, help="clips scored: 5/6 build the lookup, 1/6 are predicted")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    base = CodecData(args.data)
    mel = MelSpectrogram(MelConfig())
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(base), min(args.clips, len(base)), replace=False)
    cut = len(chosen) * 5 // 6
    train, test = chosen[:cut], chosen[cut:]
    mels = {}  # clip -> (tokens, n_mels, 4) mel frames grouped by token
    for i in chosen:
        n = base.clips[i]["tokens"]
        m = mel(torch.from_numpy(base.audio_of(int(i))))[:, : 4 * n].numpy()
        n = m.shape[1] // 4
        mels[i] = m[:, : 4 * n].reshape(m.shape[0], n, 4).transpose(1, 0, 2)

    def lookup_l1(tokens: np.ndarray | None) -> float:
        k = args.codebook if tokens is not None else 1
        sums, counts = np.zeros((k, *next(iter(mels.values())).shape[1:])), np.zeros(k)
        ids = lambda i: (tokens[base.clips[i]["feature_offset"]:][: len(mels[i])].astype(int)  # noqa: E731
                         if tokens is not None else np.zeros(len(mels[i]), dtype=int))
        for i in train:
            np.add.at(sums, ids(i), mels[i])
            np.add.at(counts, ids(i), 1)
        means = sums / np.maximum(counts, 1)[:, None, None]
        err = sum(np.abs(means[ids(i)] - mels[i]).sum() for i in test)
        env = sum(np.abs(envelope(means[ids(i)] - mels[i])).sum() for i in test)  # a linear projection
        return float(err / sum(mels[i].size for i in test)), float(env / sum(mels[i].size for i in test))

    def envelope(m: np.ndarray) -> np.ndarray:  # (tokens, n_mels, 4) -> the same, each frame's envelope
        return spectral_envelope(torch.from_numpy(m).float(), 12).numpy()

    print("no tokens (one mean for every frame): L1 {:.3f}, envelope L1 {:.3f}".format(*lookup_l1(None)))
    for layer in (int(x) for x in args.layers.split(",")):
        feats = np.asarray(CodecData(args.data, layer=layer).features, dtype=np.float32)
        pos = np.minimum(np.concatenate([np.arange(c["tokens"]) for c in base.clips]), 749)
        pos_mean = np.zeros((750, feats.shape[1]))
        np.add.at(pos_mean, pos, feats)
        pos_mean /= np.maximum(np.bincount(pos, minlength=750), 1)[:, None]
        share = 1 - ((feats - pos_mean[pos]) ** 2).sum() / ((feats - feats.mean(0)) ** 2).sum()
        t0 = time.time()
        take = np.random.default_rng(0).choice(len(feats), min(args.frames, len(feats)), replace=False)
        km = MiniBatchKMeans(args.codebook, batch_size=8192, n_init=1, max_iter=30, random_state=0,
                             reassignment_ratio=0.001).fit(feats[take])
        tokens = assign_tokens(feats, torch.from_numpy(km.cluster_centers_.astype(np.float32)))
        print(f"layer {layer}: position explains {100 * share:.0f}% of the feature variance; "
              "token lookup L1 {:.3f}, envelope L1 {:.3f}".format(*lookup_l1(tokens)) + f" ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
