"""A tokenizer that gives degraded audio the tokens of the clean speech in it: the codebook's scores
trained so that noise, reverberation, a telephone line or a gain change leave a clip's tokens as
they were ("augmentation-invariant units", Gat et al. 2022).

The shipped tokenizer takes the nearest k-means centroid of a token's pooled encoder features. That
is a linear score, `f · c_k - |c_k|^2 / 2`, and the tokenizer already reads any linear score (a
codebook trained for the words ships the same way, as centroids and a token bias). Here the scores
start as the nearest-centroid ones and are trained with cross-entropy to give, from the features of
a clip degraded by the corpus generator's own length-keeping transforms, the token the clean clip
had; clean clips keep their own tokens as targets, so the token ids and what the detokenizer learnt
of them do not change: only which token degraded audio gets.

    # 1. pairs: the stored clean features and tokens of a prepared folder; the same clips degraded
    python bench/codec_robust_tokenizer.py pairs corpus/cd_b runs/trb/tokens.npy runs/rtok/pairs.npz \\
        --codec src/unisono/assets/unisono-tiny/speech --only corpus/synth_fresh7/manifest.jsonl --clips 2400 --held-out 200
    # 2. train the scores from the centroids, report how often held-out clips get their clean tokens, export a codec
    python bench/codec_robust_tokenizer.py train runs/rtok/pairs.npz runs/rtok/speech \\
        --codec src/unisono/assets/unisono-tiny/speech --epochs 4 --lr 1e-4
    # 3. (a bound, not a tokenizer) an MLP over each token and its two neighbours on either side
    python bench/codec_robust_tokenizer.py probe runs/rtok/pairs.npz --context 2 --classes 1024

The codec written is the given one with its codebook replaced by the trained scores (centroids and a
token bias, as `unisono codec train-tokenizer` writes them); score it as any other with
`bench/codec_variants.py` or `unisono eval codec --codec`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np


def cmd_pairs(args: argparse.Namespace) -> None:
    import torch
    from rich.progress import Progress

    from unisono.data.augment import AugmentConfig, aligned_augment, make_rir_bank
    from unisono.codec.codec import SpeechCodec
    from unisono.train.codec_data import CodecData

    torch.set_num_threads(args.threads)
    codec = SpeechCodec.load(args.codec)
    layer = codec.config.tokenizer.layer
    data = CodecData(args.data, layer=layer)
    tokens = np.load(args.tokens)
    if len(tokens) != data.total_tokens:
        raise SystemExit(f"{args.tokens} holds {len(tokens)} tokens, {args.data} {data.total_tokens}: not its tokens")
    rng = np.random.default_rng(args.seed)
    pool = sorted(data.indices_from(args.only)) if args.only else list(range(len(data)))
    chosen = rng.choice(pool, size=min(len(pool), args.clips + args.held_out), replace=False).tolist()
    held, train = chosen[: args.held_out], chosen[args.held_out:]
    others = sorted(set(range(len(data))) - set(pool))  # e.g. the real speech: kept clean, as it is stored
    cfg = AugmentConfig()
    rirs = make_rir_bank(cfg.rir_bank_size, seed=args.seed)

    def clip_tokens(i: int) -> np.ndarray:
        c = data.clips[i]
        return tokens[c["feature_offset"]: c["feature_offset"] + c["tokens"]]

    out: dict[str, list] = {f"{split}_{k}": [] for split in ("train", "held") for k in ("x", "y", "kind", "clip")}
    checked = []
    with Progress() as bar:
        task = bar.add_task("degrading and encoding", total=len(chosen))
        for n, i in enumerate(chosen):
            split = "held" if n < len(held) else "train"
            audio = data.audio_of(i)
            y = clip_tokens(i)
            degraded = aligned_augment(audio, rng, cfg, rirs).audio  # the clean clip's tokens still describe it
            feats = codec.tokenizer.features([degraded])[0].numpy()
            if len(feats) != len(y):
                raise SystemExit(f"{data.clips[i]['id']}: {len(feats)} tokens from the degraded clip, {len(y)} stored")
            clean = np.asarray(data.features_of(i), dtype=np.float32)
            if len(checked) < 20:  # the stored tokens must be this codec's, or the targets are another codebook's
                checked.append(float(np.mean(codec.tokenizer.quantize(torch.from_numpy(clean)).numpy() == y)))
            for x, kind in ((clean, 0), (feats, 1)):
                out[f"{split}_x"].append(x.astype(np.float16))
                out[f"{split}_y"].append(y.astype(np.int16))
                out[f"{split}_kind"].append(np.full(len(y), kind, np.int8))
                out[f"{split}_clip"].append(np.full(len(y), 2 * n + kind, np.int32))  # a token's context stays in its clip
            bar.advance(task)
    if np.mean(checked) < 0.95:
        raise SystemExit(f"{args.codec} gives back only {100 * np.mean(checked):.0f}% of the stored tokens: another codebook?")
    for n, i in enumerate(rng.permutation(others)[: args.clean_others]):
        out["train_x"].append(np.asarray(data.features_of(i), dtype=np.float16))
        y = clip_tokens(i)
        out["train_y"].append(y.astype(np.int16))
        out["train_kind"].append(np.full(len(y), 2, np.int8))
        out["train_clip"].append(np.full(len(y), 2 * len(chosen) + n, np.int32))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **{k: np.concatenate(v) for k, v in out.items()})
    n_train = sum(len(v) for v in out["train_y"])
    print(f"{len(train)} clips clean and degraded, {min(len(others), args.clean_others)} other clips clean: "
          f"{n_train} training tokens; {len(held)} held-out clips; stored tokens given back {100 * np.mean(checked):.1f}%; {args.out}")


def agreement(scores_w, scores_b, x, y, kind) -> dict[str, float]:
    """Share of held-out tokens whose best linear score is the clean clip's token, for clean and degraded audio."""
    pred = (x @ scores_w.T + scores_b).argmax(-1)
    ok = (pred == y).float()
    return {name: float(ok[kind == k].mean()) for k, name in ((0, "clean"), (1, "degraded"))}


def cmd_train(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    z = np.load(args.pairs)
    x = torch.from_numpy(z["train_x"].astype(np.float32))
    y = torch.from_numpy(z["train_y"].astype(np.int64))
    kind = torch.from_numpy(z["train_kind"].astype(np.int64))
    hx = torch.from_numpy(z["held_x"].astype(np.float32))
    hy = torch.from_numpy(z["held_y"].astype(np.int64))
    hkind = torch.from_numpy(z["held_kind"].astype(np.int64))
    state = load_file(str(Path(args.codec) / "codec.safetensors"))
    if "token_bias" in state:
        raise SystemExit(f"{args.codec} already has a trained codebook; start from a k-means one")
    c = state["centroids"].float()
    w = c.clone().requires_grad_(True)
    b = (-0.5 * (c * c).sum(-1)).requires_grad_(True)
    before = agreement(w.detach(), b.detach(), hx, hy, hkind)
    print(f"nearest centroid, held-out clips: clean {100 * before['clean']:.1f}%, degraded {100 * before['degraded']:.1f}% of tokens as the clean clip's")
    # the clean clips' own tokens count as much as the degraded ones': clean audio must keep its tokens
    weight = torch.where(kind == 1, 1.0, args.clean_weight)
    opt = torch.optim.Adam([w, b], lr=args.lr)
    n = len(y)
    steps = args.epochs * (n // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.05)
    log = []
    step = 0
    for epoch in range(args.epochs):
        order = torch.randperm(n)
        total = 0.0
        for s in range(n // args.batch):
            idx = order[s * args.batch:(s + 1) * args.batch]
            logits = (x[idx] @ w.T + b) / args.temperature
            loss = (F.cross_entropy(logits, y[idx], reduction="none") * weight[idx]).sum() / weight[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            step += 1
        held = agreement(w.detach(), b.detach(), hx, hy, hkind)
        log.append({"epoch": epoch + 1, "loss": total / (n // args.batch), **held})
        print(f"epoch {epoch + 1}: loss {log[-1]['loss']:.3f}; held-out clean {100 * held['clean']:.1f}%, degraded {100 * held['degraded']:.1f}%", flush=True)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(args.codec, out)
    state["centroids"] = w.detach().to(state["centroids"].dtype)
    state["token_bias"] = b.detach().to(state["centroids"].dtype)
    save_file(state, str(out / "codec.safetensors"))
    # what fp16 storage does to the scores: the shipped tokenizer reads them back as stored
    stored = agreement(state["centroids"].float(), state["token_bias"].float(), hx, hy, hkind)
    (out / "robust-tokenizer.json").write_text(json.dumps(
        {"pairs": str(args.pairs), "from": str(args.codec), "epochs": args.epochs, "lr": args.lr, "batch": args.batch,
         "temperature": args.temperature, "clean_weight": args.clean_weight, "before": before, "log": log,
         "stored_fp16": stored}, indent=2))
    print(f"as stored (float16): held-out clean {100 * stored['clean']:.1f}%, degraded {100 * stored['degraded']:.1f}%; {out}")


def with_context(x, clip, k: int):
    """(N, D) features, (N,) clip ids -> (N, (2k + 1) D): each token's features with its k neighbours on
    either side, the clip's first and last token repeated past its ends."""
    import torch

    n = len(x)
    idx = torch.arange(n)
    start = torch.zeros(n, dtype=torch.long)
    end = torch.zeros(n, dtype=torch.long)
    bounds = torch.nonzero(clip[1:] != clip[:-1]).flatten() + 1
    edges = torch.cat([torch.tensor([0]), bounds, torch.tensor([n])])
    for a, b in zip(edges[:-1].tolist(), edges[1:].tolist()):
        start[a:b], end[a:b] = a, b - 1
    return torch.cat([x[torch.minimum(torch.maximum(idx + s, start), end)] for s in range(-k, k + 1)], dim=-1)


def cmd_probe(args: argparse.Namespace) -> None:
    """How far any reading of the features goes: an MLP over a token and its neighbours. It is not a
    tokenizer (the shipped one scores one token's features linearly); it bounds what one could gain."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    z = np.load(args.pairs)
    tensors = {k: torch.from_numpy(z[k].astype(np.float32 if k.endswith("_x") else np.int64)) for k in z.files}
    x = with_context(tensors["train_x"], tensors["train_clip"], args.context)
    hx = with_context(tensors["held_x"], tensors["held_clip"], args.context)
    y, hy, hkind = tensors["train_y"], tensors["held_y"], tensors["held_kind"]
    mu, sd = x.mean(0), x.std(0) + 1e-3
    model = nn.Sequential(nn.Linear(x.shape[1], args.hidden), nn.GELU(), nn.Linear(args.hidden, args.hidden), nn.GELU(),
                          nn.Linear(args.hidden, int(y.max()) + 1 if args.classes is None else args.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps_per_epoch = len(y) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    for epoch in range(args.epochs):
        order = torch.randperm(len(y))
        model.train()
        for s in range(steps_per_epoch):
            idx = order[s * args.batch:(s + 1) * args.batch]
            loss = F.cross_entropy(model((x[idx] - mu) / sd), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model((hx[j:j + 8192] - mu) / sd).argmax(-1) for j in range(0, len(hy), 8192)])
        ok = (pred == hy).float()
        print(f"epoch {epoch + 1}: last batch loss {float(loss.detach()):.3f}; held-out clean {100 * float(ok[hkind == 0].mean()):.1f}%, "
              f"degraded {100 * float(ok[hkind == 1].mean()):.1f}% of tokens as the clean clip's", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pairs", help="clean and degraded features of the same clips, with the clean tokens")
    p.add_argument("data", type=Path, help="a folder written by `unisono codec prepare` (its features of the token layer)")
    p.add_argument("tokens", type=Path, help="that folder's tokens under the codec's codebook (a run folder's tokens.npy)")
    p.add_argument("out", type=Path)
    p.add_argument("--codec", type=Path, required=True, help="the codec whose tokenizer made the tokens")
    p.add_argument("--only", type=Path, help="degrade only the clips of this source manifest (the synthetic ones)")
    p.add_argument("--clips", type=int, default=2400, help="clips to degrade for training")
    p.add_argument("--held-out", type=int, default=200, help="further clips, degraded, to measure on")
    p.add_argument("--clean-others", type=int, default=2000, help="clips from outside --only (real speech), clean, for training")
    p.add_argument("--seed", type=int, default=211, help="draws of clips, transforms and rooms (not an evaluation corpus's)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_pairs)
    t = sub.add_parser("train", help="train the scores and write a codec folder with them")
    t.add_argument("pairs", type=Path)
    t.add_argument("out", type=Path, help="the codec folder to write")
    t.add_argument("--codec", type=Path, required=True, help="the codec whose k-means codebook to start from")
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--batch", type=int, default=4096)
    t.add_argument("--temperature", type=float, default=1.0, help="the scores' scale in the loss (not at use: argmax)")
    t.add_argument("--clean-weight", type=float, default=1.0, help="weight of a clean token against a degraded one")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.set_defaults(func=cmd_train)
    q = sub.add_parser("probe", help="an MLP over a token and its neighbours: how much of the clean tokens any reading recovers")
    q.add_argument("pairs", type=Path)
    q.add_argument("--context", type=int, default=2, help="neighbours on either side")
    q.add_argument("--hidden", type=int, default=1024)
    q.add_argument("--classes", type=int, default=None, help="codebook size (default: the largest token seen + 1)")
    q.add_argument("--epochs", type=int, default=3)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--batch", type=int, default=1024)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, default=2)
    q.set_defaults(func=cmd_probe)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
