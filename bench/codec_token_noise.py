"""Which encoder layer's tokens survive noise? For each layer, a k-means codebook fitted on clean clips,
then held-out clips tokenized clean and degraded (the corpus generator's length-keeping transforms:
noise, reverberation, telephone band, gain), and three figures:

- agreement: the share of a degraded clip's tokens that are the clean clip's;
- clean lookup: each token's mean mel (a table built on the clean training clips) predicting the clean
  clips' mel frames, spectral envelope L1 (12 cepstra): how much of the words' sound the tokens carry
  (bench/codec_token_layers.py);
- degraded lookup: the same table read with the degraded clips' tokens, against the clean mel: how much
  of it the tokens still say once the clip is degraded, which is what a detokenizer can render.

Layer 4 is the encoder's output; `4-pos` is the same with each position's mean feature (over the clean
training clips) subtracted first, since Whisper's absolute positions explain a third of its variance.

    python bench/codec_token_noise.py corpus/cd_b --only corpus/synth_fresh7/manifest.jsonl --layers 2,3,4,4-pos
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    from rich.progress import Progress
    from sklearn.cluster import MiniBatchKMeans

    from unisono.data.augment import AugmentConfig, aligned_augment, make_rir_bank
    from unisono.codec.mel import mel_for_tokens, spectral_envelope
    from unisono.codec.codec import SpeechCodec, default_codec_path
    from unisono.train.codec_data import CodecData
    from unisono.train.codec_train import assign_tokens

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="a folder written by `unisono codec prepare`")
    ap.add_argument("--only", help="draw the clips from this source manifest (e.g. the synthetic ones)")
    ap.add_argument("--layers", default="2,3,4,4-pos")
    ap.add_argument("--codebook", type=int, default=1024)
    ap.add_argument("--clips", type=int, default=1200, help="clean clips for the codebooks and lookup tables")
    ap.add_argument("--held-out", type=int, default=200, help="clips tokenized clean and degraded")
    ap.add_argument("--seed", type=int, default=307, help="draws of clips, transforms and rooms")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    codec = SpeechCodec.load(default_codec_path())
    tokenizer = codec.tokenizer
    if tokenizer.config.frame_difference:
        raise SystemExit("the shipped tokenizer pools with a frame difference; this measures plain means")
    specs = args.layers.split(",")
    layers = sorted({int(s.split("-")[0]) for s in specs})
    data = CodecData(args.data)
    rng = np.random.default_rng(args.seed)
    pool = sorted(data.indices_from(args.only)) if args.only else list(range(len(data)))
    chosen = rng.choice(pool, size=min(len(pool), args.clips + args.held_out), replace=False).tolist()
    train, held = chosen[: args.clips], chosen[args.clips:]
    cfg = AugmentConfig()
    rirs = make_rir_bank(cfg.rir_bank_size, seed=args.seed)
    up = codec.config.token2mel.upsample

    def mel_by_token(audio: np.ndarray, n: int) -> np.ndarray:  # (n, n_mels, up) clean mel frames, grouped by token
        m = mel_for_tokens(codec.mel(torch.from_numpy(audio).float()), n, up, codec.config.mel.log_floor)
        return m.reshape(m.shape[0], n, up).permute(1, 0, 2).numpy()

    feats = {"train": {layer: [] for layer in layers}, "clean": {layer: [] for layer in layers},
             "degraded": {layer: [] for layer in layers}}
    mels: dict[str, list[np.ndarray]] = {"train": [], "held": []}
    with Progress() as bar:
        task = bar.add_task("encoding", total=len(chosen))
        for n, i in enumerate(chosen):
            audio = data.audio_of(i)
            kinds = {"train": audio} if n < len(train) else {"clean": audio}
            if n >= len(train):
                kinds["degraded"] = aligned_augment(audio, rng, cfg, rirs).audio
            for kind, clip in kinds.items():
                f = tokenizer.layer_features([clip], layers)[0]
                for layer in layers:
                    feats[kind][layer].append(f[layer].numpy())
            n_tok = len(feats["train" if n < len(train) else "clean"][layers[0]][-1])
            mels["train" if n < len(train) else "held"].append(mel_by_token(audio, n_tok))
            bar.advance(task)
    train_mel, held_mel = np.concatenate(mels["train"]), np.concatenate(mels["held"])
    held_env = spectral_envelope(torch.from_numpy(held_mel).float(), 12).numpy()

    def lookup_envelope_l1(train_tokens: np.ndarray, held_tokens: np.ndarray) -> float:
        sums, counts = np.zeros((args.codebook, *train_mel.shape[1:])), np.zeros(args.codebook)
        np.add.at(sums, train_tokens, train_mel)
        np.add.at(counts, train_tokens, 1)
        means = sums / np.maximum(counts, 1)[:, None, None]
        predicted = spectral_envelope(torch.from_numpy(means[held_tokens]).float(), 12).numpy()
        return float(np.abs(predicted - held_env).mean())

    results = {}
    for spec in specs:
        layer = int(spec.split("-")[0])
        x = {kind: np.concatenate(feats[kind][layer]) for kind in feats}
        if spec.endswith("-pos"):
            positions = {kind: np.minimum(np.concatenate([np.arange(len(f)) for f in feats[kind][layer]]), 749) for kind in feats}
            pos_mean = np.zeros((750, x["train"].shape[1]))
            np.add.at(pos_mean, positions["train"], x["train"])
            pos_mean /= np.maximum(np.bincount(positions["train"], minlength=750), 1)[:, None]
            x = {kind: x[kind] - pos_mean[positions[kind]] for kind in x}
        km = MiniBatchKMeans(args.codebook, batch_size=8192, n_init=1, max_iter=30, random_state=0,
                             reassignment_ratio=0.001).fit(x["train"])
        centroids = torch.from_numpy(km.cluster_centers_.astype(np.float32))
        tokens = {kind: assign_tokens(x[kind].astype(np.float32), centroids) for kind in x}
        results[spec] = {
            "agreement": float(np.mean(tokens["clean"] == tokens["degraded"])),
            "clean_lookup_envelope_l1": lookup_envelope_l1(tokens["train"], tokens["clean"]),
            "degraded_lookup_envelope_l1": lookup_envelope_l1(tokens["train"], tokens["degraded"]),
        }
        r = results[spec]
        print(f"layer {spec}: degraded clips keep {100 * r['agreement']:.1f}% of their clean tokens; envelope L1 of the "
              f"token lookup, clean {r['clean_lookup_envelope_l1']:.3f}, degraded {r['degraded_lookup_envelope_l1']:.3f}", flush=True)
    no_tokens = float(np.abs(spectral_envelope(torch.from_numpy(train_mel.mean(0, keepdims=True)).float(), 12).numpy() - held_env).mean())
    print(f"no tokens (one mean for every frame): envelope L1 {no_tokens:.3f}; {len(held)} held-out clips, "
          f"{len(held_mel)} tokens")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"data": args.data, "only": args.only, "clips": len(train), "held_out": len(held), "seed": args.seed,
                       "no_tokens_envelope_l1": no_tokens, "layers": results}, f, indent=2)


if __name__ == "__main__":
    main()
