"""Which detokenizer keeps more of the words? Resynthesise one set with several codec variants
from the same tokens (variants with another codebook from their own) and score each with the independent recogniser of `unisono eval codec`
(faster-whisper on the bundled tiny.en, int8, greedy; the set's default scoring).

A variant is a codec folder (or `copy:FOLDER`: its vocoder on the original audio's mel, copy
synthesis without tokens, the vocoder's own share of the loss), optionally with a refiner temperature (`:0.3`, or `:off` to bypass
the refiner), another codec's vocoder (`+other/folder`) and a mel post-filter (`@t=0.5,f=0.5`:
unsharp masking of the log-mel along time and along frequency, 5-frame / 5-bin averages, with
these gains; a test of whether the smoothed mel alone costs the words; or `@m=1,v=1`: each mel bin's mean
and spread over the clip moved towards those of the voice reference's first 6 s (the clip's own), with these
strengths, the "global variance" remedy for over-smoothed regression); a trailing `~rev` takes the voice
from the clip played backwards: its register and timbre without its words, to check that a gain from
voicing a codec with the clip itself is the voice, not the words leaking through the speaker embedding;
`~other`: the voice from the next clip of the same speaker in the set, as a voice prompt would be, or with
`--voices MANIFEST` from a clip of the same speaker drawn from that manifest, e.g. a clean one for a degraded clip):

    python bench/codec_variants.py ../shared/data/real_speech/ljspeech_lj001 \\
        src/unisono/assets/unisono-tiny/speech  runs/x/speech+runs/y/speech  runs/z/speech:0.3

The set may also be a prepared codec data folder (`unisono codec prepare`): `--limit` English
clips drawn from it at random (seed 0), clips the codec was trained on. Resynthesis no better
there than on held-out sets means the words are lost to what the model can do, not to
generalisation.

`--out` keeps the rates, the count of runaway clips (the recogniser looped: more inserted words
than the reference has) and every clip's transcripts and error counts per variant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def sharpen(mel: torch.Tensor, time_gain: float, freq_gain: float, width: int = 5) -> torch.Tensor:
    """(B, n_mels, F) log-mel + gain x (itself - its local average), along time then frequency."""
    import torch.nn.functional as F

    def unsharp(x: torch.Tensor, gain: float) -> torch.Tensor:  # along the last axis
        local = F.avg_pool1d(F.pad(x, (width // 2, width // 2), mode="replicate"), width, 1)
        return x + gain * (x - local)

    if time_gain:
        mel = unsharp(mel, time_gain)
    if freq_gain:
        mel = unsharp(mel.transpose(1, 2), freq_gain).transpose(1, 2)
    return mel


def match_statistics(mel: torch.Tensor, reference: torch.Tensor, mean_gain: float, std_gain: float) -> torch.Tensor:
    """(B, n_mels, F) log-mel with each bin's mean and spread over time moved towards those of
    `reference` (n_mels, F_ref): gain 1 matches, 0 leaves it."""
    mu, sd = mel.mean(-1, keepdim=True), mel.std(-1, keepdim=True).clamp(min=1e-3)
    mu_ref, sd_ref = reference.mean(-1)[None, :, None], reference.std(-1)[None, :, None].clamp(min=1e-3)
    return (mel - mu) * (sd_ref / sd) ** std_gain + mu + mean_gain * (mu_ref - mu)


def same_codebook(a, b) -> bool:
    """Whether two codecs turn audio into the same tokens (same tokenizer settings, centroids and bias)."""
    if a.config.tokenizer != b.config.tokenizer or a.centroids.shape != b.centroids.shape:
        return False
    if (a.token_bias is None) != (b.token_bias is None):
        return False
    return torch.equal(a.centroids, b.centroids) and (a.token_bias is None or torch.equal(a.token_bias, b.token_bias))


def load_variant(spec: str):
    from unisono.codec.codec import SpeechCodec

    spec = spec.removeprefix("copy:").removesuffix("~rev").removesuffix("~other")
    spec, _, post_filter = spec.partition("@")
    base, _, vocoder = spec.partition("+")
    folder, _, temperature = base.partition(":")
    codec = SpeechCodec.load(folder)
    if vocoder:
        codec.vocoder.load_state_dict(SpeechCodec.load(vocoder).vocoder.state_dict())
    if temperature and codec.refiner is None:
        raise SystemExit(f"{folder} has no refiner, so {spec!r} means nothing")
    if temperature == "off":
        codec.refiner = None
    elif temperature:
        codec.refiner.config.temperature = float(temperature)
    if post_filter:
        gains = {k: float(v) for k, v in (item.split("=") for item in post_filter.split(","))}
        mel = codec._mel
        if {"m", "v"} & set(gains):  # main() sets the voice reference's mel per clip
            codec.reference_mel = None
            codec._mel = lambda tokens, speaker, start=0: match_statistics(
                mel(tokens, speaker, start), codec.reference_mel, gains.get("m", 0.0), gains.get("v", 0.0))
        else:
            codec._mel = lambda tokens, speaker, start=0: sharpen(mel(tokens, speaker, start), gains.get("t", 0.0), gains.get("f", 0.0))
    return codec


@torch.no_grad()
def copy_synthesis(codec, audio: "np.ndarray") -> "np.ndarray":
    """The codec's vocoder on the mel of the audio itself (no tokens, no token-to-mel model)."""
    return codec.vocoder(codec.mel(torch.from_numpy(audio).float()[None]))[0, : len(audio)].numpy()


def training_clips(directory: str, n: int, seed: int = 0) -> list[tuple[str, str, "np.ndarray"]]:
    """(id, text, audio) of n English clips of a prepared codec data folder."""
    import random

    from unisono.train.codec_data import CodecData

    data = CodecData(directory)
    english = [i for i, c in enumerate(data.clips) if c["language"] == "en"]
    chosen = random.Random(seed).sample(english, min(n, len(english)))
    return [(data.clips[i]["id"], data.clips[i]["text"], data.audio_of(i)) for i in chosen]


def voices_from(manifest: str, utterances) -> dict:
    """{clip id: audio path of a clip of the same speaker drawn from `manifest`} (seed 0, in the set's order);
    a clip whose speaker the manifest lacks is voiced by itself."""
    import numpy as np

    from unisono.eval.manifest import load_set
    from unisono.data.manifest import ManifestError

    try:
        voices = load_set(manifest).utterances
    except ManifestError as e:
        raise SystemExit(f"--voices: {e}") from None
    pool: dict = {}
    for u in voices:
        pool.setdefault(u.speaker, []).append(u.audio)
    rng = np.random.default_rng(0)
    chosen = {}
    for u in utterances:
        candidates = pool.get(u.speaker)
        chosen[u.id] = candidates[rng.integers(len(candidates))] if candidates else u.audio
    return chosen


def main() -> None:
    from unisono.audio.io import load_audio
    from unisono.eval.codec import is_runaway
    from unisono.eval.manifest import load_set
    from unisono.eval.metrics import count_errors, total
    from unisono.eval.normalize import default_scoring_name, make_scoring
    from unisono.eval.systems import build_system

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", help="a JSONL manifest, a set folder, or a prepared codec data folder (its training clips)")
    ap.add_argument("variants", nargs="+", help="codec folder[:temperature|:off][+vocoder codec folder][@t=GAIN,f=GAIN | @m=GAIN,v=GAIN][~rev|~other]")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument("--voices", help="for ~other: a manifest to draw each clip's voice from (a clip of the same speaker, seed 0)")
    ap.add_argument("--recognizer", default="faster-whisper",
                    help="the recogniser that scores both sides, as `unisono eval asr` names systems (faster-whisper, pocketsphinx, ...)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if Path(args.set, "clips.jsonl").is_file():
        name, language = Path(args.set).name, "en"
        clips_in = training_clips(args.set, args.limit or 60)
        if any(spec.endswith("~other") for spec in args.variants):
            raise SystemExit("~other needs a set with speakers (a manifest), not a codec data folder")
    else:
        eval_set = load_set(args.set).head(args.limit)
        name, language = eval_set.name, eval_set.language
        clips_in = ((u.id, u.text, load_audio(u.audio, max_duration_s=120)) for u in eval_set.utterances)
        if args.voices:
            other_clip = voices_from(args.voices, eval_set.utterances)
        else:  # the next clip of the speaker (cyclically); a speaker with one clip is voiced by itself
            by_speaker: dict = {}
            for u in eval_set.utterances:
                by_speaker.setdefault(u.speaker, []).append(u.id)
            audio_of = {u.id: u.audio for u in eval_set.utterances}
            other_clip = {ids[k]: audio_of[ids[(k + 1) % len(ids)]] for ids in by_speaker.values() for k in range(len(ids))}
    score = make_scoring(default_scoring_name(name, language))
    recognizer = build_system(args.recognizer, threads=args.threads)
    codecs = {spec: load_variant(spec) for spec in args.variants}
    # variants with the same codebook share the tokens (tokenized once); one with another codebook gets its own
    tokenizer_of: dict[str, object] = {}
    for spec, codec in codecs.items():
        tokenizer_of[spec] = next((tokenizer_of[s] for s in tokenizer_of if same_codebook(codecs[s], codec)), codec)
    counts: dict[str, list] = {"original": []} | {spec: [] for spec in codecs}
    clips = []  # per clip: the reference and every variant's transcript, to see where the errors are
    for clip_id, text, audio in clips_in:
        reference = score.normalize(text)
        hyps = {"original": recognizer.transcribe(audio, language="en")}
        tokens_of: dict[int, torch.Tensor] = {}
        for spec, codec in codecs.items():
            tokenizer = tokenizer_of[spec]
            tokens = tokens_of.get(id(tokenizer))
            if tokens is None and not spec.startswith("copy:"):
                tokens = tokens_of[id(tokenizer)] = tokenizer.tokenize(audio)
            if spec.startswith("copy:"):
                wave = copy_synthesis(codec, audio)
            else:
                if spec.endswith("~rev"):
                    voice = audio[::-1].copy()
                elif spec.endswith("~other"):
                    voice = load_audio(other_clip[clip_id], max_duration_s=120)
                else:
                    voice = audio
                if hasattr(codec, "reference_mel"):  # as the voice embedding reads it: the first 6 s
                    codec.reference_mel = codec.mel(torch.from_numpy(voice[: 6 * 16000]).float())
                wave = codec.detokenize(tokens, codec.speaker_embedding(voice))
            hyps[spec] = recognizer.transcribe(wave, language="en")
        for variant, hyp in hyps.items():
            counts[variant].append(count_errors(reference, score.normalize(hyp), score.unit))
        clips.append({"id": clip_id, "reference": text, "hyp": hyps,
                      "errors": {variant: counts[variant][-1].errors for variant in hyps}})
    figures = {variant: total(c).rate for variant, c in counts.items()}
    runaway = {variant: sum(is_runaway(c) for c in cs) for variant, cs in counts.items()}
    # original vs each variant on the clips where neither side looped: one looping clip can outweigh the rest
    steady = {}
    for spec in codecs:
        keep = [i for i, (o, v) in enumerate(zip(counts["original"], counts[spec])) if not (is_runaway(o) or is_runaway(v))]
        steady[spec] = {"clips": len(keep), "original": total([counts["original"][i] for i in keep]).rate,
                        "resynth": total([counts[spec][i] for i in keep]).rate}
    print(f"{name}: {len(clips)} clips")
    for variant, rate in figures.items():
        line = f"  {100 * rate:6.1f}%  {variant}" + (f"  ({runaway[variant]} runaway clips)" if runaway[variant] else "")
        if variant in steady and steady[variant]["clips"] < len(clips):
            st = steady[variant]
            line += f"; without runaway clips ({st['clips']}): original {100 * st['original']:.1f}% -> {100 * st['resynth']:.1f}%"
        print(line)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"set": args.set, "recognizer": recognizer.name, "clips": len(clips), "wer": figures,
                       "runaway_clips": runaway, "without_runaway": steady, "per_clip": clips}, f, indent=2)


if __name__ == "__main__":
    main()
