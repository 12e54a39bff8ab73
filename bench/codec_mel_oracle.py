"""Where in the mel does the detokenizer lose the words? Oracles that splice the real mel of a clip
into the token-to-mel estimate (or alter the real mel alone), voiced by the codec's own vocoder and
scored by the independent recogniser of `unisono eval codec` (faster-whisper on the bundled tiny.en).

A variant is `kind` or `kind=P`:

    copy                   the real mel (copy synthesis: the vocoder's own share of the loss)
    pred                   the token-to-mel estimate (the codec as shipped)
    lifter=N               the real mel's spectral envelope alone: its first N cepstra (DCT-II along
                           frequency) per frame, the harmonics of the voice removed
    predlifter=N           the same of the estimate
    realenv=N              the real envelope (first N cepstra) + the estimate's fine structure (the rest)
    predenv=N              the estimate's envelope + the real fine structure
    realenvtoken=N         as realenv, the real envelope averaged over each token's mel frames: the best a
                           token could say of it if it says one envelope
    realbelow=HZ           real mel bins centred below HZ, the estimate's above
    realabove=HZ           the estimate's below HZ, real above
    energy                 the estimate moved to the real frame-wise mean (loudness contour)
    tblur=W                the real mel averaged over W frames in time (what a smeared estimate costs)

    python bench/codec_mel_oracle.py corpus/codec_dev src/unisono/assets/unisono-tiny/speech \\
        copy pred lifter=12 realenv=12 predenv=12 --out docs/codec/oracle/dev.json

Beside each variant's word errors it prints how much its spectral envelope (12 cepstra) moves within a
token (each frame's distance from the token's mean envelope), as a share of how much the real one does,
and how far that movement is from the real one, as a share of the real one's size (1.0: no better than
an envelope held still over each token). An L1 estimate that averages trajectories moves less.

The figures printed and kept are over the clips where no side looped (more inserted words than the
reference has), as `bench/codec_variants.py` reports them: one looping clip outweighs the rest.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from unisono.codec.mel import spectral_envelope as envelope


def time_blur(mel: torch.Tensor, width: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(mel[None], (width // 2, (width - 1) // 2), mode="replicate")  # any width keeps the length
    return torch.nn.functional.avg_pool1d(padded, width, 1)[0]


def token_mean(env: torch.Tensor, upsample: int) -> torch.Tensor:
    """(n_mels, F) -> the same with each token's `upsample` frames replaced by their mean; a last partial
    token is dropped."""
    n_mels, tokens = env.shape[0], env.shape[-1] // upsample
    per_token = env[:, : tokens * upsample].reshape(n_mels, tokens, upsample).mean(-1, keepdim=True)
    return per_token.expand(-1, -1, upsample).reshape(n_mels, tokens * upsample)


def within_token(mel: torch.Tensor, upsample: int, cepstra: int = 12) -> torch.Tensor:
    """(n_mels, F) -> (n_mels, upsample * tokens): each frame's spectral envelope (its first `cepstra`
    cepstra, on the mel axis) less the mean envelope of its token's frames."""
    env = envelope(mel, cepstra)
    return env[:, : env.shape[-1] // upsample * upsample] - token_mean(env, upsample)


def motion_figures(mel: torch.Tensor, real: torch.Tensor, upsample: int) -> tuple[float, float]:
    """How much the envelope moves within tokens, as a share of the real mel's movement, and the L1 between
    the two movements as a share of the real one's size (0: the real trajectory; 1: as far as none at all)."""
    mine, theirs = within_token(mel, upsample), within_token(real, upsample)
    size = float(theirs.abs().mean())
    return float(mine.abs().mean()) / size, float((mine - theirs).abs().mean()) / size


def splice(variant: str, real: torch.Tensor, pred: torch.Tensor, centre_hz: torch.Tensor, upsample: int) -> torch.Tensor:
    """(n_mels, F) real mel and estimate -> the variant's mel. The envelope is a linear projection, so
    "the real envelope + the estimate's fine structure" is the estimate moved by the envelope of the difference."""
    kind, _, p = variant.partition("=")
    if kind == "copy":
        return real
    if kind == "pred":
        return pred
    if kind == "lifter":
        return envelope(real, int(p))
    if kind == "predlifter":
        return envelope(pred, int(p))
    if kind == "realenv":
        return pred + envelope(real - pred, int(p))
    if kind == "realenvtoken":
        return token_mean(envelope(real, int(p)), upsample) + pred - envelope(pred, int(p))  # estimates have whole tokens
    if kind == "predenv":
        return real + envelope(pred - real, int(p))
    if kind == "realbelow":
        return torch.where((centre_hz < float(p))[:, None], real, pred)
    if kind == "realabove":
        return torch.where((centre_hz >= float(p))[:, None], real, pred)
    if kind == "energy":
        return pred - pred.mean(0, keepdim=True) + real.mean(0, keepdim=True)
    if kind == "tblur":
        return time_blur(real, int(p))
    raise SystemExit(f"unknown variant {variant!r}; see --help")


def main() -> None:
    from unisono.audio.io import load_audio
    from unisono.eval.codec import is_runaway
    from unisono.eval.manifest import load_set
    from unisono.eval.metrics import count_errors, total
    from unisono.eval.normalize import default_scoring_name, make_scoring
    from unisono.eval.systems import build_system
    from unisono.codec.codec import SpeechCodec
    from unisono.codec.mel import mel_for_tokens

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", help="a JSONL manifest or a set folder")
    ap.add_argument("codec", help="a codec folder (its tokenizer, token-to-mel model and vocoder)")
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--by-condition", action="store_true",
                    help="also split the clips where no side looped by the synthetic clips' engine and degradation")
    ap.add_argument("--out", help="write the figures and every clip's error count as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    codec = SpeechCodec.load(args.codec)
    c = codec.config.mel
    centre_hz = codec.mel.filters.argmax(1).float() * c.sample_rate / c.n_fft
    for variant in args.variants:  # fail before the long loop, not in it
        splice(variant, torch.zeros(c.n_mels, 4), torch.zeros(c.n_mels, 4), centre_hz, 4)
    eval_set = load_set(args.set).head(args.limit)
    score = make_scoring(default_scoring_name(eval_set.name, eval_set.language))
    recognizer = build_system("faster-whisper", threads=args.threads)
    counts: dict[str, list] = {v: [] for v in ["original", *args.variants]}
    l1: dict[str, list[float]] = {v: [] for v in args.variants}
    motion: dict[str, list[tuple[float, float]]] = {v: [] for v in args.variants}
    up = codec.config.token2mel.upsample
    for u in eval_set.utterances:
        audio = load_audio(u.audio, max_duration_s=120)
        reference = score.normalize(u.text)
        heard = {"original": recognizer.transcribe(audio, language="en")}
        tokens = codec.tokenize(audio)
        pred = codec.tokens_to_mel(tokens, codec.speaker_embedding(audio))
        real = mel_for_tokens(codec.mel(torch.from_numpy(audio).float()), len(tokens), up, c.log_floor)
        for variant in args.variants:
            mel = splice(variant, real, pred, centre_hz, up)
            l1[variant].append(float((mel - real).abs().mean()))
            motion[variant].append(motion_figures(mel, real, up))
            heard[variant] = recognizer.transcribe(codec.mel_to_audio(mel).clamp(-1, 1).numpy(), language="en")
        for variant, hyp in heard.items():
            counts[variant].append(count_errors(reference, score.normalize(hyp), score.unit))
    keep = [i for i in range(len(counts["original"])) if not any(is_runaway(cs[i]) for cs in counts.values())]
    steady = {v: total([cs[i] for i in keep]).rate for v, cs in counts.items()}
    print(f"{eval_set.name}: {len(keep)} of {len(counts['original'])} clips where no side looped")
    for variant, rate in steady.items():
        print(f"  {100 * rate:6.1f}%  {variant}" + (f"   mel L1 to the real {np.mean(l1[variant]):.3f}; within tokens the "
                                                     f"envelope moves {np.mean([m for m, _ in motion[variant]]):.2f} of the "
                                                     f"real's, off it by {np.mean([e for _, e in motion[variant]]):.2f}"
                                                     if variant in l1 else ""))
    by_condition = {}
    if args.by_condition:
        from codec_runaway_split import condition_of

        groups: dict[str, list[int]] = {}
        for i in keep:
            groups.setdefault(condition_of({"meta": eval_set.utterances[i].meta}), []).append(i)
        for group, members in sorted(groups.items()):
            by_condition[group] = {"clips": len(members), **{v: total([cs[i] for i in members]).rate for v, cs in counts.items()}}
            print(f"    {group} ({len(members)} clips): " + ", ".join(f"{v} {100 * r:.1f}%" for v, r in by_condition[group].items()
                                                                     if v != "clips"))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"set": args.set, "codec": args.codec, "clips": len(counts["original"]), "steady_clips": keep,
                       "wer_steady": steady, "wer_steady_by_condition": by_condition, "wer_all": {v: total(cs).rate for v, cs in counts.items()},
                       "mel_l1": {v: float(np.mean(x)) for v, x in l1.items()},
                       "motion_within_tokens": {v: float(np.mean([m for m, _ in x])) for v, x in motion.items()},
                       "motion_error_within_tokens": {v: float(np.mean([e for _, e in x])) for v, x in motion.items()},
                       "errors": {v: [x.errors for x in cs] for v, cs in counts.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
