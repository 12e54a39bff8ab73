"""Do the words come back if the resynthesis carries exactly its tokens? The shipped codec's resynthesis of a
clip re-tokenizes to the same tokens only about two times in three. Here each clip's mel is optimised at test
time, from the token-to-mel estimate, until the vocoded audio re-tokenizes to the given tokens (cross-entropy of
the tokenizer's own nearest-centroid scores of the resynthesis, through the frozen vocoder and encoder): the
tokens alone are the target, as a detokenizer may use nothing else. If the words follow the tokens, a
detokenizer that renders its tokens more faithfully would close the gap; if not, what the recogniser misses
is not in which token each frame is.

    python bench/codec_token_consistency.py corpus/dev23 --limit 60 --steps 20 --out docs/codec/oracle/consistency-dev23.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F


class TokenScores:
    """Audio -> (T, codebook) the scores `unisono.codec.tokenizer.quantize` takes the argmax of, differentiable
    (the encoder as the re-encoding loss runs it: a copy that passes gradients to its input)."""

    def __init__(self, tokenizer):
        from unisono.train.codec_train import Reencoder

        self.reader = Reencoder(tokenizer.encoder, tokenizer.config.layer)
        self.pool = tokenizer.config.pool
        self.centroids = tokenizer.centroids.float()
        self.bias = -0.5 * (self.centroids ** 2).sum(-1) if tokenizer.bias is None else tokenizer.bias.float()

    def __call__(self, wave: torch.Tensor, n_tokens: int) -> torch.Tensor:
        frames, lengths = self.reader([wave])
        f = frames[0, 0, : int(lengths[0])]
        need = n_tokens * self.pool
        if f.shape[0] < need:  # as the tokenizer: the encoder drops a partial last frame
            f = torch.cat([f, f[-1:].expand(need - f.shape[0], -1)])
        return f[:need].reshape(n_tokens, self.pool, -1).mean(1) @ self.centroids.T + self.bias


def main() -> None:
    from unisono.audio.io import load_audio
    from unisono.eval.codec import is_runaway
    from unisono.eval.manifest import load_set
    from unisono.eval.metrics import count_errors, total
    from unisono.eval.normalize import default_scoring_name, make_scoring
    from unisono.eval.systems import build_system
    from unisono.codec.codec import SpeechCodec, default_codec_path, soft_limit

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", help="a JSONL manifest or a set folder")
    ap.add_argument("--codec", default=None, help="codec folder (default: the shipped one)")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--steps", type=int, default=20, help="Adam steps on each clip's mel")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the figures and transcripts as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    codec = SpeechCodec.load(args.codec or default_codec_path())
    codec.requires_grad_(False)
    scores = TokenScores(codec.tokenizer)
    eval_set = load_set(args.set).head(args.limit)
    score = make_scoring(default_scoring_name(eval_set.name, eval_set.language))
    recognizer = build_system("faster-whisper", threads=args.threads)
    variants = ("original", "resynthesis", "consistent")
    counts: dict[str, list] = {v: [] for v in variants}
    clips, started = [], time.perf_counter()
    for utt in eval_set.utterances:
        audio = load_audio(utt.audio, max_duration_s=120)
        tokens = codec.tokenize(audio)
        voice = codec.speaker_embedding(audio)
        estimate = codec.tokens_to_mel(tokens, voice)
        mel = estimate.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([mel], lr=args.lr)
        for _ in range(args.steps):
            loss = F.cross_entropy(scores(codec.vocoder(mel[None])[0], len(tokens)), tokens)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            waves = {"resynthesis": soft_limit(codec.mel_to_audio(estimate)), "consistent": soft_limit(codec.vocoder(mel[None])[0])}
            agreement = {k: float((scores(w, len(tokens)).argmax(-1) == tokens).float().mean()) for k, w in waves.items()}
        hyps = {"original": recognizer.transcribe(audio, language="en")}
        hyps |= {k: recognizer.transcribe(w.numpy(), language="en") for k, w in waves.items()}
        reference = score.normalize(utt.text)
        for k in variants:
            counts[k].append(count_errors(reference, score.normalize(hyps[k]), score.unit))
        clips.append({"id": utt.id, "degraded": bool(utt.meta.get("augment")), "reference": utt.text, "hyp": hyps,
                      "token_agreement": agreement})
        print(f"{len(clips):3d} {utt.id}: tokens kept {agreement['resynthesis']:.2f} -> {agreement['consistent']:.2f}, "
              f"errors {', '.join(str(counts[k][-1].errors) for k in variants)} ({time.perf_counter() - started:.0f} s)", flush=True)

    steady = [i for i in range(len(clips)) if not any(is_runaway(counts[k][i]) for k in variants)]
    summary = {}
    for group, keep in (("all", steady), ("clean", [i for i in steady if not clips[i]["degraded"]]),
                        ("degraded", [i for i in steady if clips[i]["degraded"]])):
        summary[group] = {"clips": len(keep)} | {k: total([counts[k][i] for i in keep]).rate for k in variants} | {
            f"tokens_kept_{k}": float(np.mean([clips[i]["token_agreement"][k] for i in keep])) if keep else float("nan")
            for k in ("resynthesis", "consistent")}
    print("clips where nothing loops | n | tokens kept: resynthesis, consistent | WER: original, resynthesis, consistent")
    for group, s in summary.items():
        print(f"{group} | {s['clips']} | {100 * s['tokens_kept_resynthesis']:.1f}%, {100 * s['tokens_kept_consistent']:.1f}% | "
              f"{100 * s['original']:.1f}%, {100 * s['resynthesis']:.1f}%, {100 * s['consistent']:.1f}%")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"set": args.set, "codec": args.codec or "shipped", "steps": args.steps, "lr": args.lr,
                       "summary": summary, "per_clip": clips}, f, indent=2)


if __name__ == "__main__":
    main()
