"""A learned front end for the tokenizer: a small convolutional network that corrects a degraded clip's
log-mel before the frozen encoder, trained so that the encoder's features at the token layer (and the
tokens read from them) are those of the clean clip.

Spectral gating and dereverberation (bench/codec_enhanced_tokens.py) clean the audio for the ear, not
for the encoder, and give degraded clips no tokens back; an MLP over the token layer's features
(bench/codec_robust_tokenizer.py) reads only what the first layers kept. This network sees the log-mel
itself and is taught through the frozen layers, with the clean clip's features and tokens as targets:
"feature-domain enhancement" with the recogniser's own encoder as the loss. Its last layer starts at
zero, so before training it is the identity and the tokens are the shipped ones.

    python bench/codec_mel_enhancer.py train corpus/cd_b runs/enh --only corpus/synth_fresh7/manifest.jsonl --steps 1500
    python bench/codec_mel_enhancer.py probe corpus/cd_b runs/enh --only corpus/synth_fresh7/manifest.jsonl --clips 200

`probe` reports, on held-out clips degraded with another room bank, the share of tokens that are the
clean clip's, with and without the front end, as bench/codec_enhanced_tokens.py does for the classical ones.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TOKENS_PER_CROP = 80  # 3.2 s


class MelEnhancer(nn.Module):
    """(B, n_mels, T) normalised log-mel -> the same plus a correction; receptive field +-2 * (2 + sum(dilations)) frames (20)."""

    def __init__(self, n_mels: int = 80, hidden: int = 256, dilations: tuple[int, ...] = (1, 2, 4, 1)):
        super().__init__()
        self.inp = nn.Conv1d(n_mels, hidden, 5, padding=2)
        self.blocks = nn.ModuleList(nn.Conv1d(hidden, hidden, 5, padding=2 * d, dilation=d) for d in dilations)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in dilations)  # per frame: no statistics over time
        self.out = nn.Conv1d(hidden, n_mels, 5, padding=2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.inp(mel))
        for conv, norm in zip(self.blocks, self.norms):
            x = x + conv(F.gelu(norm(x.transpose(1, 2)).transpose(1, 2)))
        return mel + self.out(F.gelu(x))


def encode_to_layer(encoder, mel: torch.Tensor, layer: int) -> torch.Tensor:
    """Frozen encoder up to `layer` (1-based) on equal-length items: (B, n_mels, T) -> (B, ceil(T/2), D)."""
    w = encoder.whisper
    x = F.gelu(w.conv1(mel))
    x = F.gelu(w.conv2(x)).transpose(1, 2)
    x = x + w.embed_positions.weight[: x.shape[1]]
    for block in w.layers[:layer]:
        x = block(x, None)
        x = x[0] if isinstance(x, tuple) else x
    return x


def pooled(frames: torch.Tensor, pool: int) -> torch.Tensor:
    B, T, D = frames.shape
    return frames[:, : T // pool * pool].reshape(B, T // pool, pool, D).mean(2)


def load_codec(path: str | None):
    from unisono.codec.codec import SpeechCodec, default_codec_path

    codec = SpeechCodec.load(path or default_codec_path())
    if codec.tokenizer.config.frame_difference:
        raise SystemExit("the tokenizer pools with a frame difference; this front end is for plain means")
    return codec


def held_out_and_training(data, only: str | None, clips: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """The probe's held-out draw (bench/codec_enhanced_tokens.py's, for the same seed) and the rest."""
    pool = sorted(data.indices_from(only)) if only else list(range(len(data)))
    held = rng.choice(pool, size=min(len(pool), clips), replace=False).tolist()
    rest = sorted(set(pool) - set(held))
    return held, rest


def cmd_train(args: argparse.Namespace) -> None:
    from rich.progress import Progress

    from unisono.audio.features import log_mel
    from unisono.data.augment import AugmentConfig, aligned_augment, make_rir_bank
    from unisono.train.codec_data import CodecData

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    codec = load_codec(args.codec)
    tok = codec.tokenizer
    layer, pool, spt = tok.config.layer, tok.config.pool, tok.config.samples_per_token
    centroids = tok.centroids.float()
    c_sq = 0.5 * (centroids * centroids).sum(-1)
    try:
        data = CodecData(args.data)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    _, train = held_out_and_training(data, args.only, args.held_out, np.random.default_rng(args.held_out_seed))
    crop = TOKENS_PER_CROP * spt
    rng = np.random.default_rng(args.seed)
    cfg = AugmentConfig()
    rirs = make_rir_bank(cfg.rir_bank_size, seed=args.room_seed)
    enhancer = MelEnhancer(n_mels=tok.encoder.config.n_mels)
    opt = torch.optim.AdamW(enhancer.parameters(), lr=args.lr, weight_decay=0.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train.jsonl", "a")

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        clean, degraded = [], []
        while len(clean) < args.batch:
            audio = data.audio_of(int(rng.choice(train)))
            if len(audio) < crop:  # a short clip: draw again
                continue
            noisy = audio if rng.random() < args.clean_share else aligned_augment(audio, rng, cfg, rirs).audio
            start = int(rng.integers(0, (len(audio) - crop) // spt + 1)) * spt
            clean.append(log_mel(audio[start:start + crop]))
            degraded.append(log_mel(noisy[start:start + crop]))
        return torch.stack(clean), torch.stack(degraded)

    t0 = time.time()
    with Progress() as bar:
        task = bar.add_task("training the front end", total=args.steps)
        for step in range(1, args.steps + 1):
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(step / args.steps, 1.0)))
            for g in opt.param_groups:
                g["lr"] = lr
            clean, degraded = batch()
            with torch.no_grad():
                target = pooled(encode_to_layer(tok.encoder, clean, layer), pool)
                target_tokens = (target @ centroids.T - c_sq).argmax(-1)
            got = pooled(encode_to_layer(tok.encoder, enhancer(degraded), layer), pool)
            feature_loss = ((got - target) ** 2).mean() / target.var()
            logits = (got @ centroids.T - c_sq) / args.temperature
            token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_tokens.reshape(-1))
            loss = feature_loss + args.token_weight * token_loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(enhancer.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                agree = float((logits.argmax(-1) == target_tokens).float().mean())
            rec = {"step": step, "loss": loss.item(), "feature": feature_loss.item(), "token": token_loss.item(),
                   "agree": agree, "lr": lr, "s": round(time.time() - t0, 1)}
            log.write(json.dumps(rec) + "\n")
            if step % 25 == 0:
                log.flush()
                bar.console.print(f"step {step}: features {rec['feature']:.3f}, tokens {rec['token']:.3f}, "
                                  f"batch tokens kept {100 * agree:.1f}%")
            if step % args.save_every == 0 or step == args.steps:
                torch.save({"enhancer": enhancer.state_dict(), "step": step, "args": vars(args)}, out / "enhancer.pt")
            bar.advance(task)


def load_enhancer(run: str | Path) -> MelEnhancer:
    path = Path(run) / "enhancer.pt"
    if not path.is_file():
        raise SystemExit(f"no front end at {path}: train one first (python bench/codec_mel_enhancer.py train DATA {run})")
    state = torch.load(path, map_location="cpu")
    enhancer = MelEnhancer()
    enhancer.load_state_dict(state["enhancer"])
    return enhancer.eval()


def cmd_probe(args: argparse.Namespace) -> None:
    from codec_enhanced_tokens import print_shares, shares_of_clean_tokens  # beside this script

    from unisono.data.augment import AugmentConfig, make_rir_bank
    from unisono.train.codec_data import CodecData

    torch.set_num_threads(args.threads)
    codec = load_codec(args.codec)
    tok = codec.tokenizer
    enhancer = load_enhancer(args.run)
    encoder = tok.encoder
    plain_forward = encoder.forward

    def tokens(audio: np.ndarray, enhanced: bool) -> np.ndarray:
        encoder.forward = (lambda mel, lengths=None: plain_forward(enhancer(mel), lengths)) if enhanced else plain_forward
        try:
            with torch.no_grad():
                return codec.tokenize(audio).numpy()
        finally:
            encoder.forward = plain_forward

    try:
        data = CodecData(args.data)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    rng = np.random.default_rng(args.held_out_seed)  # the draw of clips, then of their degradations
    held, _ = held_out_and_training(data, args.only, args.clips, rng)
    cfg = AugmentConfig()
    rirs = make_rir_bank(cfg.rir_bank_size, seed=args.room_seed)
    shares, order = shares_of_clean_tokens(data, held, rng, cfg, rirs, {
        "shipped": lambda audio: tokens(audio, enhanced=False), "front end": lambda audio: tokens(audio, enhanced=True)})
    print_shares(shares, order)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"run": args.run, "clips": len(held), "room_seed": args.room_seed,
                       "share_of_clean_tokens": {g: {m: float(np.mean(v)) for m, v in shares[g].items()} for g in order}},
                      f, indent=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("data", help="a folder written by `unisono codec prepare`")
    common.add_argument("--only", help="draw the clips from this source manifest (e.g. the synthetic ones)")
    common.add_argument("--codec", help="a codec folder (default: the shipped one)")
    common.add_argument("--held-out-seed", type=int, default=11, help="the probe's draw of clips (and of their degradations)")
    common.add_argument("--threads", type=int, default=2)
    t = sub.add_parser("train", parents=[common])
    t.add_argument("out")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--clean-share", type=float, default=0.2, help="items left clean (the front end must keep them)")
    t.add_argument("--token-weight", type=float, default=1.0)
    t.add_argument("--temperature", type=float, default=1.0, help="divides the nearest-centroid scores in the token loss")
    t.add_argument("--held-out", type=int, default=200, help="the probe's clips, kept out of training")
    t.add_argument("--room-seed", type=int, default=7, help="the room bank of training (the probe uses another)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save-every", type=int, default=100)
    p = sub.add_parser("probe", parents=[common])
    p.add_argument("run")
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--room-seed", type=int, default=101)
    p.add_argument("--out")
    args = ap.parse_args()
    {"train": cmd_train, "probe": cmd_probe}[args.cmd](args)


if __name__ == "__main__":
    main()
