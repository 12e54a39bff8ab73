"""Which detokenizer keeps more of the words? Resynthesise one set with several codec variants
from the same tokens and score each with the independent recogniser of `unisono eval codec`
(faster-whisper on the bundled tiny.en, int8, greedy; the set's default scoring).

A variant is a codec folder, optionally with a refiner temperature (`:0.3`, or `:off` to bypass
the refiner) and another codec's vocoder (`+other/folder`):

    python bench/codec_variants.py ../shared/data/real_speech/ljspeech_lj001 \\
        src/unisono/assets/unisono-tiny/speech  runs/x/speech+runs/y/speech  runs/z/speech:0.3

`--out` keeps the rates, the count of runaway clips (the recogniser looped: more inserted words
than the reference has) and every clip's transcripts and error counts per variant.
"""

from __future__ import annotations

import argparse
import json

import torch


def load_variant(spec: str):
    from unisono.model.speech.codec import SpeechCodec

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
    return codec


def main() -> None:
    from unisono.audio.io import load_audio
    from unisono.eval.manifest import load_set
    from unisono.eval.codec import is_runaway
    from unisono.eval.metrics import count_errors, total
    from unisono.eval.normalize import default_scoring_name, make_scoring
    from unisono.eval.systems import FasterWhisperConfig, FasterWhisperSystem

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", help="a JSONL manifest or set folder")
    ap.add_argument("variants", nargs="+", help="codec folder[:temperature|:off][+vocoder codec folder]")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    eval_set = load_set(args.set).head(args.limit)
    score = make_scoring(default_scoring_name(eval_set.name, eval_set.language))
    recognizer = FasterWhisperSystem(FasterWhisperConfig(threads=args.threads))
    codecs = {spec: load_variant(spec) for spec in args.variants}
    tokenizer = next(iter(codecs.values()))  # the variants share the tokens: tokenize once
    counts: dict[str, list] = {"original": []} | {spec: [] for spec in codecs}
    clips = []  # per clip: the reference and every variant's transcript, to see where the errors are
    for utt in eval_set.utterances:
        audio = load_audio(utt.audio, max_duration_s=120)
        reference = score.normalize(utt.text)
        hyps = {"original": recognizer.transcribe(audio, language="en")}
        tokens = tokenizer.tokenize(audio)
        for spec, codec in codecs.items():
            hyps[spec] = recognizer.transcribe(codec.detokenize(tokens, codec.speaker_embedding(audio)), language="en")
        for name, hyp in hyps.items():
            counts[name].append(count_errors(reference, score.normalize(hyp), score.unit))
        clips.append({"id": utt.id, "reference": utt.text, "hyp": hyps,
                      "errors": {name: counts[name][-1].errors for name in hyps}})
    figures = {name: total(c).rate for name, c in counts.items()}
    runaway = {name: sum(is_runaway(c) for c in cs) for name, cs in counts.items()}
    print(f"{eval_set.name}: {len(eval_set.utterances)} clips")
    for name, rate in figures.items():
        print(f"  {100 * rate:6.1f}%  {name}" + (f"  ({runaway[name]} runaway clips)" if runaway[name] else ""))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"set": args.set, "clips": len(eval_set.utterances), "wer": figures, "runaway_clips": runaway,
                       "per_clip": clips}, f, indent=2)


if __name__ == "__main__":
    main()
