"""Tokens chosen for the words: a codebook trained so that the tokenizer's own Whisper model can read the
clip's text back from the tokens (the supervised semantic tokens of CosyVoice's S3 tokenizer, on a frozen
encoder), against the k-means codebook the codec ships.

    layer-3 features (25 Hz) ─► standardise ─► linear 384 → d ─► nearest of K unit codes (cosine) ─► token
    token ─► code ─► linear d → 384 ─► 3 convolutions (±6 tokens) ─► + position ─► Whisper layer 4 + decoder

The right half is scaffolding that only trains the left: it reads the tokens as a detokenizer would, with
context, and is scored two ways, the cross-entropy of the clip's text (teacher forcing) and the error of
the features it rebuilds. `--arm fixed` trains the same scaffolding on the shipped k-means tokens, so the
two arms differ only in which tokens they read.

Because the projection is linear and the codes are unit vectors, the tokenizer is again a linear scorer
of the features, `argmax_k f · w_k + b_k`: `export` writes it as `centroids` (the w_k) and `bias`.

    python bench/codec_token_vq.py train corpus/codec_data4 src/unisono/assets/unisono-tiny/speech runs/vq --arm learned
    python bench/codec_token_vq.py train corpus/codec_data4 src/unisono/assets/unisono-tiny/speech runs/vqk --arm fixed
    python bench/codec_token_vq.py read corpus/codec_dev src/unisono/assets/unisono-tiny/speech runs/vq --out x.json
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

MAX_TOKENS = 750  # one 30 s window


class Codebook(nn.Module):
    """The part that would ship: standardise, project, nearest unit code."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, d_code: int, size: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.proj = nn.Linear(len(mean), d_code)
        self.codes = nn.Parameter(F.normalize(torch.randn(size, d_code), dim=-1))

    def project(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj((f - self.mean) / self.std), dim=-1)

    def forward(self, f: torch.Tensor):
        z = self.project(f)
        c = F.normalize(self.codes, dim=-1)
        idx = (z @ c.T).argmax(-1)
        q = c[idx]
        vq = (q - z.detach()).pow(2).sum(-1).mean() + 0.25 * (z - q.detach()).pow(2).sum(-1).mean()
        return z + (q - z).detach(), idx, vq, z

    def linear_scorer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, D) weights and (K,) biases with argmax_k f · w_k + b_k the same token as `forward`."""
        c = F.normalize(self.codes, dim=-1)
        a = self.proj.weight / self.std  # (d, D)
        b = self.proj.bias - a @ self.mean
        return (c @ a).detach(), (c @ b).detach()


class FixedCodes(nn.Module):
    """The other arm: the shipped k-means tokens, each with a learned code."""

    def __init__(self, tokenizer, d_code: int):
        super().__init__()
        self.tokenizer = tokenizer
        self.codes = nn.Embedding(tokenizer.config.codebook_size, d_code)

    def forward(self, f: torch.Tensor):
        idx = self.tokenizer.quantize(f)
        return self.codes(idx), idx, f.new_zeros(()), None


class Readout(nn.Module):
    """Scaffolding: codes -> standardised layer-3 features, with ±6 tokens of context and learned positions."""

    def __init__(self, d_code: int, dim: int, position: torch.Tensor):
        super().__init__()
        self.up = nn.Linear(d_code, dim)
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, 5, padding=2) for _ in range(3))
        self.position = nn.Parameter(position.clone())

    def forward(self, q: torch.Tensor) -> torch.Tensor:  # (T, d) -> (T, D)
        x = self.up(q).T[None]
        for conv in self.convs:
            x = x + conv(F.gelu(x))
        return x[0].T + self.position[: len(q)]


def text_ce(reader, features: torch.Tensor, text: str) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of the text read from (T25, D) layer-3 features, the clip alone (as the
    tokenizer runs the encoder), and the number of tokens it is summed over."""
    w = reader.encoder.whisper
    x = features.repeat_interleave(2, 0)[None]
    for layer in w.layers[reader.layer:]:
        x = layer(x, None)
    x = w.layer_norm(x)
    seq = torch.tensor(reader.text.token_ids(text, "en"))
    n = len(seq) - len(reader.prompt)
    hidden = reader.text.decoder(input_ids=seq[None, :-1], encoder_hidden_states=x).last_hidden_state
    return F.cross_entropy(reader.text.proj_out(hidden[0, -n:]), seq[-n:], reduction="sum"), n


def position_mean(data, mean: torch.Tensor, std: torch.Tensor, clips: list[int]) -> torch.Tensor:
    """(750, D) mean standardised feature at each token position within a clip, minus the overall mean."""
    total = torch.zeros(MAX_TOKENS, len(mean), dtype=torch.float64)
    count = torch.zeros(MAX_TOKENS, 1, dtype=torch.float64)
    for i in clips:
        f = (torch.from_numpy(np.asarray(data.features_of(i), dtype=np.float32)) - mean) / std
        total[: len(f)] += f.double()
        count[: len(f)] += 1
    pos = total / count.clamp(min=1)
    pos[count[:, 0] < 20] = pos[count[:, 0] >= 20][-1]  # rare late positions: the last well-measured one
    return (pos - pos[count[:, 0] >= 20].mean(0)).float()


def init_codes(book: Codebook, sample: torch.Tensor, iters: int = 20, seed: int = 0) -> None:
    """The projection from the top principal components, the codes by spherical k-means on the sample."""
    x = (sample - book.mean) / book.std
    _, _, v = torch.pca_lowrank(x, q=book.proj.out_features, center=True)
    with torch.no_grad():
        book.proj.weight.copy_(v.T)
        book.proj.bias.copy_(-(x.mean(0) @ v))
        z = book.project(sample)
        g = torch.Generator().manual_seed(seed)
        c = z[torch.randperm(len(z), generator=g)[: len(book.codes)]].clone()
        for _ in range(iters):
            idx = (z @ c.T).argmax(-1)
            sums = torch.zeros_like(c).index_add_(0, idx, z)
            used = torch.bincount(idx, minlength=len(c)) > 0
            c[used] = F.normalize(sums[used], dim=-1)
        book.codes.copy_(c)


def train(args) -> None:
    from codec_token_readback import Reader

    from unisono.model.speech.codec import SpeechCodec
    from unisono.train.codec_data import CodecData

    codec = SpeechCodec.load(args.codec)
    reader = Reader(codec)
    for module in (reader.encoder, reader.text.decoder, reader.text.proj_out):
        module.requires_grad_(False)
    data = CodecData(args.data, layer=codec.tokenizer.config.layer)
    english = [i for i, c in enumerate(data.clips) if c["language"] == "en" and c["tokens"] <= args.max_tokens and c.get("text", "").strip()]
    rng = random.Random(args.seed)
    stats = torch.from_numpy(np.asarray(data.features[:: max(1, len(data.features) // 200_000)], dtype=np.float32))
    mean, std = stats.mean(0), stats.std(0).clamp(min=1e-3)
    out = Path(args.run)
    out.mkdir(parents=True, exist_ok=True)
    position = position_mean(data, mean, std, english[:2000])
    if args.arm == "learned":
        book = Codebook(mean, std, args.d_code, codec.tokenizer.config.codebook_size)
        init_codes(book, stats[torch.randperm(len(stats), generator=torch.Generator().manual_seed(0))[:100_000]])
    else:
        book = FixedCodes(codec.tokenizer, args.d_code)
    readout = Readout(args.d_code, len(mean), position)
    params = [p for p in list(book.parameters()) + list(readout.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    usage = torch.zeros(codec.tokenizer.config.codebook_size)
    log = open(out / "train.jsonl", "a")
    t0, window = time.time(), []
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = [rng.choice(english) for _ in range(args.batch)]
        feats = [torch.from_numpy(np.asarray(data.features_of(i), dtype=np.float32)) for i in idx]
        mse, ce, n_text, vq, zs, tok = 0.0, 0.0, 0, 0.0, [], []
        for i, f in zip(idx, feats):
            q, t, v, z = book(f)
            rebuilt = readout(q)
            mse = mse + (rebuilt - (f - mean) / std).pow(2).mean()
            c, n = text_ce(reader, rebuilt * std + mean, data.clips[i]["text"])
            ce, n_text, vq = ce + c, n_text + n, vq + v
            tok.append(t)
            if z is not None:
                zs.append(z.detach())
        mse, ce, vq = mse / len(idx), ce / n_text, vq / len(idx)
        loss = args.transcript_weight * ce + args.feature_weight * mse + vq
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        tok = torch.cat(tok)
        usage = 0.98 * usage + torch.bincount(tok, minlength=len(usage)).float()
        if zs and (step + 1) % 25 == 0:  # codes nobody uses start again where the features are
            dead = (usage < 0.02).nonzero()[:, 0]
            if len(dead):
                z = torch.cat(zs)
                with torch.no_grad():
                    book.codes[dead] = z[torch.randint(len(z), (len(dead),))]
                usage[dead] = 0.5
        p = torch.bincount(tok, minlength=len(usage)).float()
        p = p[p > 0] / p.sum()
        window.append((float(ce.detach()), float(mse.detach()), float(vq), float(torch.exp(-(p * p.log()).sum()))))
        if (step + 1) % 10 == 0:
            m = np.mean(window, 0)
            row = {"step": step + 1, "lr": lr, "ce": m[0], "mse": m[1], "vq": m[2], "batch_perplexity": m[3],
                   "live_codes": int((usage > 0.02).sum()), "s_per_step": (time.time() - t0) / len(window)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(row, flush=True)
            t0, window = time.time(), []
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            torch.save({"arm": args.arm, "d_code": args.d_code, "book": book.state_dict() if args.arm == "learned" else
                        {"codes.weight": book.codes.weight}, "readout": readout.state_dict(), "step": step + 1,
                        "mean": mean, "std": std}, out / "vq.pt")


def load(run: str, codec):
    state = torch.load(Path(run) / "vq.pt")
    mean, std = state["mean"], state["std"]
    size = codec.tokenizer.config.codebook_size
    if state["arm"] == "learned":
        book = Codebook(mean, std, state["d_code"], size)
    else:
        book = FixedCodes(codec.tokenizer, state["d_code"])
    book.load_state_dict(state["book"], strict=False)
    readout = Readout(state["d_code"], len(mean), torch.zeros(MAX_TOKENS, len(mean)))
    readout.load_state_dict(state["readout"])
    return book.eval(), readout.eval(), mean, std


@torch.no_grad()
def read(args) -> None:
    from codec_token_readback import Reader, read_set

    from unisono.eval.manifest import load_set
    from unisono.model.speech.codec import SpeechCodec

    codec = SpeechCodec.load(args.codec)
    reader = Reader(codec)
    book, readout, mean, std = load(args.run, codec)

    def inputs_of(audio: np.ndarray, f: torch.Tensor) -> dict[str, torch.Tensor]:
        n = f.shape[0]
        pooled = codec.tokenizer.features([audio])[0]
        q, _, _, _ = book(pooled)
        return {"original": f, "read": (readout(q) * std + mean).repeat_interleave(2, 0)[:n]}

    read_set(reader, load_set(args.set).head(args.limit), ["original", "read"], inputs_of, args.out,
             {"set": args.set, "run": args.run})


def export(args) -> None:
    """Write the learned tokenizer as a linear scorer and tokenize the data folder with it."""
    from safetensors.torch import save_file

    from unisono.model.speech.codec import SpeechCodec
    from unisono.train.codec_data import CodecData

    codec = SpeechCodec.load(args.codec)
    book, _, _, _ = load(args.run, codec)
    w, b = book.linear_scorer()
    data = CodecData(args.data, layer=codec.tokenizer.config.layer)
    tokens = np.empty(len(data.features), dtype=np.int16)
    for s in range(0, len(tokens), 65536):
        x = torch.from_numpy(np.asarray(data.features[s:s + 65536], dtype=np.float32))
        tokens[s:s + 65536] = (x @ w.T + b).argmax(-1).numpy()
        with torch.no_grad():
            assert (book(x[:512])[1] == (x[:512] @ w.T + b).argmax(-1)).float().mean() > 0.99
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"centroids": w.contiguous(), "bias": b.contiguous()}, str(out / "tokenizer.safetensors"),
              metadata={"layer": str(data.layer), "codebook_size": str(len(w))})
    np.save(out / "tokens.npy", tokens)
    used = np.bincount(tokens, minlength=len(w))
    p = used[used > 0] / used.sum()
    print(f"codebook use: {(used > 0).sum()}/{len(w)} entries, perplexity {np.exp(-(p * np.log(p)).sum()):.0f}")


def warmstart(args) -> None:
    """A codec folder to fine-tune the detokenizer from: the shipped codec with the exported tokenizer, each
    new token's embedding the mean of the old embeddings over the frames it takes (so the detokenizer starts
    near what it rendered from the old tokens of the same audio)."""
    from safetensors.torch import load_file

    from unisono.model.speech.codec import SpeechCodec
    from unisono.train.codec_data import CodecData
    from unisono.train.codec_train import assign_tokens

    codec = SpeechCodec.load(args.codec)
    data = CodecData(args.data, layer=codec.tokenizer.config.layer)
    old = assign_tokens(data.features, codec.centroids).astype(np.int64)
    new = np.load(Path(args.tokens) / "tokens.npy").astype(np.int64)
    k = codec.config.tokenizer.codebook_size
    embed = codec.token2mel.embed.weight.detach()
    sums = torch.zeros(k, embed.shape[1]).index_add_(0, torch.from_numpy(new), embed[torch.from_numpy(old)])
    counts = torch.bincount(torch.from_numpy(new), minlength=k).float()
    mapped = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], embed.mean(0))
    purity = np.mean([np.bincount(old[new == t]).max() / (new == t).sum() for t in np.unique(new)])
    print(f"{int((counts > 0).sum())}/{k} new tokens seen; the commonest old token of a new one covers {100 * purity:.0f}% of its frames")
    scorer = load_file(str(Path(args.tokens) / "tokenizer.safetensors"))
    with torch.no_grad():
        codec.token2mel.embed.weight.copy_(mapped)
    codec.centroids = scorer["centroids"]
    codec.token_bias = scorer["bias"]
    codec.save(args.out)


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("data")
    t.add_argument("codec")
    t.add_argument("run")
    t.add_argument("--arm", choices=["learned", "fixed"], default="learned")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--max-tokens", type=int, default=200)
    t.add_argument("--d-code", type=int, default=16)
    t.add_argument("--transcript-weight", type=float, default=1.0)
    t.add_argument("--feature-weight", type=float, default=1.0)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("read")
    r.add_argument("set")
    r.add_argument("codec")
    r.add_argument("run")
    r.add_argument("--limit", type=int, default=None)
    r.add_argument("--out")
    e = sub.add_parser("export")
    e.add_argument("data")
    e.add_argument("codec")
    e.add_argument("run")
    e.add_argument("out")
    w = sub.add_parser("warmstart")
    w.add_argument("data")
    w.add_argument("codec")
    w.add_argument("tokens", help="the folder `export` wrote")
    w.add_argument("out")
    for p in (t, r, e, w):
        p.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"train": train, "read": read, "export": export, "warmstart": warmstart}[args.command](args)


if __name__ == "__main__":
    main()
