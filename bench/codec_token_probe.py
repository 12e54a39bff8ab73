"""An upper bound on what any detokenizer can give the recogniser from these tokens: a probe maps the
tokens straight to the encoder features they were taken from (no mel, no vocoder, no voice), trained to
regress those features and to be read by the tokenizer's Whisper model against the clip's text (the
transcript loss, taken on features instead of audio). Its features are then read as
`bench/codec_token_readback.py` reads the others.

If the probe's WER stays far above the original's, the tokens lose the words and no detokenizer will
bring them back; if it comes near, the detokenizer is what loses them.

    python bench/codec_token_probe.py train corpus/codec_data4 src/unisono/assets/unisono-tiny/speech runs/probe \\
        --steps 1500 --threads 1
    python bench/codec_token_probe.py read corpus/codec_dev src/unisono/assets/unisono-tiny/speech runs/probe \\
        --threads 1 --out docs/codec/probe-dev.json

The probe: each token's centroid (its embedding starts there), a depthwise convolution for position,
4 bidirectional transformer blocks over the clip, a residual to the centroid; 25 Hz features repeated
to the encoder's 50 Hz, which `bench/codec_token_readback.py` shows costs the recogniser nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Probe(nn.Module):
    def __init__(self, centroids: torch.Tensor, n_layers: int = 4, n_heads: int = 6):
        super().__init__()
        d = centroids.shape[1]
        self.embed = nn.Embedding.from_pretrained(centroids.clone(), freeze=False)
        self.position = nn.Conv1d(d, d, 7, padding=3, groups=d)
        layer = nn.TransformerEncoderLayer(d, n_heads, 4 * d, dropout=0.1, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.out = nn.Linear(d, d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens -> (B, T, D) features at 25 Hz; starts as each token's centroid."""
        c = self.embed(tokens)
        x = c + self.position(c.transpose(1, 2)).transpose(1, 2)
        pad = torch.arange(tokens.shape[1])[None] >= lengths[:, None]
        return c + self.out(self.blocks(x, src_key_padding_mask=pad))


def transcript_ce(reader, features: torch.Tensor, text: str) -> torch.Tensor:
    """Cross-entropy per text token of the tokenizer's Whisper model reading (T25, D) features."""
    x = reader.upper(features.repeat_interleave(2, 0))
    seq = torch.tensor(reader.text.token_ids(text, "en"))
    n_text = len(seq) - len(reader.prompt)
    hidden = reader.text.decoder(input_ids=seq[None, :-1], encoder_hidden_states=x).last_hidden_state
    return F.cross_entropy(reader.text.proj_out(hidden[0, -n_text:]), seq[-n_text:])


def train(args) -> None:
    from codec_token_readback import Reader

    from unisono.codec.codec import SpeechCodec
    from unisono.train.codec_data import CodecData

    codec = SpeechCodec.load(args.codec)
    reader = Reader(codec)
    for p in list(reader.encoder.parameters()) + list(reader.text.decoder.parameters()) + list(reader.text.proj_out.parameters()):
        p.requires_grad_(False)
    layer = codec.tokenizer.config.layer
    data = CodecData(args.data, layer=layer)
    english = [i for i, c in enumerate(data.clips) if c["language"] == "en" and c["tokens"] <= 200 and c.get("text", "").strip()]
    centroids = codec.tokenizer.centroids.float()
    scale = torch.from_numpy(np.asarray(data.features[: 200_000], dtype=np.float32)).std(0).clamp(min=1e-3)
    probe = Probe(centroids)
    opt = torch.optim.AdamW(probe.parameters(), lr=args.lr, weight_decay=0.01)
    rng = random.Random(0)
    out = Path(args.run)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "probe.jsonl", "a")
    t0 = time.time()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = [rng.choice(english) for _ in range(args.batch)]
        feats = [torch.from_numpy(np.asarray(data.features_of(i), dtype=np.float32)) for i in idx]
        tokens = [codec.tokenizer.quantize(f) for f in feats]  # the same tokens the tokenizer gives these features
        T = max(len(t) for t in tokens)
        batch = torch.zeros(len(idx), T, dtype=torch.long)
        for b, t in enumerate(tokens):
            batch[b, : len(t)] = t
        lengths = torch.tensor([len(t) for t in tokens])
        pred = probe(batch, lengths)
        mse = sum(((pred[b, : len(f)] - f) / scale).pow(2).mean() for b, f in enumerate(feats)) / len(feats)
        ce = sum(transcript_ce(reader, pred[b, : len(feats[b])], data.clips[i]["text"])
                 for b, i in enumerate(idx[: args.read_clips])) / args.read_clips
        loss = mse + args.transcript_weight * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
        opt.step()
        if (step + 1) % 10 == 0:
            row = {"step": step + 1, "lr": float(lr), "mse": float(mse.detach()), "transcript": float(ce.detach()), "s_per_step": (time.time() - t0) / 10}
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(row, flush=True)
            t0 = time.time()
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            torch.save({"probe": probe.state_dict(), "step": step + 1}, out / "probe.pt")


@torch.no_grad()
def read(args) -> None:
    from codec_token_readback import Reader, read_set

    from unisono.eval.manifest import load_set
    from unisono.codec.codec import SpeechCodec

    codec = SpeechCodec.load(args.codec)
    reader = Reader(codec)
    centroids = codec.tokenizer.centroids.float()
    probe = Probe(centroids)
    probe.load_state_dict(torch.load(Path(args.run) / "probe.pt")["probe"])
    probe.eval()

    def inputs_of(audio: np.ndarray, f: torch.Tensor) -> dict[str, torch.Tensor]:
        n = f.shape[0]
        tokens = codec.tokenize(audio)
        probed = probe(tokens[None], torch.tensor([len(tokens)]))[0]
        return {"original": f, "tokens": centroids[tokens].repeat_interleave(2, 0)[:n], "probe": probed.repeat_interleave(2, 0)[:n]}

    read_set(reader, load_set(args.set).head(args.limit), ["original", "tokens", "probe"], inputs_of, args.out,
             {"set": args.set, "codec": args.codec, "probe": args.run})


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the probe on a prepared codec data folder")
    t.add_argument("data")
    t.add_argument("codec")
    t.add_argument("run")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--read-clips", type=int, default=4, help="clips of each batch read by the recogniser")
    t.add_argument("--transcript-weight", type=float, default=1.0)
    t.add_argument("--lr", type=float, default=3e-4)
    r = sub.add_parser("read", help="score the probe's features on a set")
    r.add_argument("set")
    r.add_argument("codec")
    r.add_argument("run")
    r.add_argument("--limit", type=int, default=None)
    r.add_argument("--out")
    for p in (t, r):
        p.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train(args) if args.command == "train" else read(args)


if __name__ == "__main__":
    main()
