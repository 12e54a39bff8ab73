"""How many of the words do the tokens themselves carry? The tokenizer's Whisper model reads a clip
with its layer-`L` features replaced by what the tokens keep, and its WER is compared with the
same model reading the original features and the codec's resynthesis.

Each clip is read by the same pipeline: the tokenizer's encoder on the clip alone (as the tokenizer
runs it), the layers after `L` and the final LayerNorm, then Whisper's decoder, greedy, no
timestamps, the clip's frames at the start of a 30 s window of silence. What differs is the layer-`L` features handed to the layers after it:

    original     the clip's own features
    pooled       the mean of each 2 frames, repeated (the 25 Hz the tokens are taken at)
    tokens       each token's centroid, repeated
    resynth      the features of the codec's resynthesis (voiced from the clip itself)

If `tokens` is near `original`, the words are in the tokens and the detokenizer loses them; if it is
near `resynth`, the tokens are what loses them and no detokenizer can bring them back.

    python bench/codec_token_readback.py corpus/synth_heldout3_en src/unisono/assets/unisono-tiny/speech \\
        --threads 1 --out docs/codec/readback-heldout3.json

`read_set` is also what `bench/codec_token_probe.py` scores its probe with.
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

import numpy as np
import torch


class Reader:
    """Whisper's layers after the tokenizer's layer, and its decoder, greedy."""

    def __init__(self, codec):
        from unisono.audio.features import WHISPER_WINDOW_SAMPLES
        from unisono.train.codec_train import TranscriptLoss

        self.tokenizer = codec.tokenizer
        self.encoder = self.tokenizer.encoder
        self.layer = self.tokenizer.config.layer
        self.text = TranscriptLoss(self.tokenizer.config.encoder_source, self.encoder)
        self.prompt = self.text.prompt("en")
        # Whisper reads 30 s windows and loops on a clip given alone, so each clip's frames are put at the
        # start of a window whose rest is the features of silence (not of the clip's own padding: those
        # frames attend to the clip and would carry its words past the condition).
        self.silence = self.features(np.zeros(WHISPER_WINDOW_SAMPLES, dtype=np.float32))

    @torch.no_grad()
    def features(self, audio) -> torch.Tensor:
        """(T50, D) features after the tokenizer's layer, the clip encoded alone."""
        from unisono.audio.features import batch_log_mel
        from unisono.codec.tokenizer import encoder_layers

        mel, lengths = batch_log_mel([audio], n_mels=self.encoder.config.n_mels)
        captured, frame_lengths = encoder_layers(self.encoder, mel, lengths, (self.layer,))
        return captured[self.layer][0, : int(frame_lengths[0])].float()

    def upper(self, features: torch.Tensor) -> torch.Tensor:
        """(T50, D) features at the tokenizer's layer -> (1, 1500, D) encoder output of their window, for
        the decoder; differentiable with respect to `features`."""
        w = self.encoder.whisper
        n = min(len(features), len(self.silence))
        x = torch.cat([features[:n], self.silence[n:]])[None]
        for layer in w.layers[self.layer:]:
            x = layer(x, None)
        return w.layer_norm(x) if self.layer < len(w.layers) else x  # the encoder's output already had its LayerNorm

    @torch.no_grad()
    def read(self, features: torch.Tensor, max_tokens: int) -> str:
        x = self.upper(features)
        decoder, proj, end = self.text.decoder, self.text.proj_out, self.text.end
        out = decoder(input_ids=torch.tensor([self.prompt]), encoder_hidden_states=x, use_cache=True)
        text_ids = []
        for _ in range(max_tokens):
            logits = proj(out.last_hidden_state[0, -1])
            logits[end + 1:] = -float("inf")  # no special tokens but the end
            nxt = int(logits.argmax())
            if nxt == end:
                break
            text_ids.append(nxt)
            out = decoder(input_ids=torch.tensor([[nxt]]), encoder_hidden_states=x,
                          past_key_values=out.past_key_values, use_cache=True)
        return self.text.tokenizer.decode(text_ids)


def read_set(reader: Reader, eval_set, conditions: list[str],
             inputs_of: Callable[[np.ndarray, torch.Tensor], dict[str, torch.Tensor]], out: str | None, meta: dict) -> None:
    """Read every clip of `eval_set` under each condition (`inputs_of(audio, features)`: the layer-L
    features each condition hands on), print the WERs, all clips and those where no condition loops, and
    write them with every clip's transcripts to `out`."""
    from unisono.audio.io import load_audio
    from unisono.eval.codec import is_runaway
    from unisono.eval.metrics import count_errors, total
    from unisono.eval.normalize import default_scoring_name, make_scoring

    score = make_scoring(default_scoring_name(eval_set.name, eval_set.language))
    counts: dict[str, list] = {c: [] for c in conditions}
    clips = []
    for u in eval_set.utterances:
        audio = load_audio(u.audio, max_duration_s=30)
        reference = score.normalize(u.text)
        max_tokens = 3 * len(reader.text.tokenizer.encode(" " + u.text).ids) + 20  # a looping read stops here
        inputs = inputs_of(audio, reader.features(audio))
        hyps = {c: reader.read(inputs[c], max_tokens) for c in conditions}
        for c, hyp in hyps.items():
            counts[c].append(count_errors(reference, score.normalize(hyp), score.unit))
        clips.append({"id": u.id, "reference": u.text, "hyp": hyps, "errors": {c: counts[c][-1].errors for c in hyps}})
        print(f"{len(clips):4d} {u.id} " + " ".join(f"{c}={counts[c][-1].errors}" for c in conditions), flush=True)
    keep = [i for i in range(len(clips)) if not any(is_runaway(counts[c][i]) for c in conditions)]
    figures = {c: total(cs).rate for c, cs in counts.items()}
    steady = {c: total([cs[i] for i in keep]).rate for c, cs in counts.items()}
    print(f"{eval_set.name}: {len(clips)} clips; {len(keep)} where no condition loops")
    for c in conditions:
        print(f"  {c:10s} {100 * figures[c]:6.1f}%   without loops {100 * steady[c]:6.1f}%")
    if out:
        with open(out, "w") as fh:
            json.dump(meta | {"clips": len(clips), "wer": figures, "steady_clips": len(keep), "wer_without_loops": steady,
                              "per_clip": clips}, fh, indent=2)


def main() -> None:
    from unisono.eval.manifest import load_set
    from unisono.codec.codec import SpeechCodec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", help="a JSONL manifest or a set folder")
    ap.add_argument("codec", help="a codec folder")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-resynth", action="store_true", help="skip the resynthesis (faster)")
    ap.add_argument("--out", help="write the figures and every clip's transcripts as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    codec = SpeechCodec.load(args.codec)
    reader = Reader(codec)
    centroids = codec.tokenizer.centroids.float()
    pool = codec.tokenizer.config.pool

    def inputs_of(audio: np.ndarray, f: torch.Tensor) -> dict[str, torch.Tensor]:
        n = f.shape[0]
        tokens = codec.tokenize(audio)
        pooled = f[: n - n % pool].reshape(-1, pool, f.shape[1]).mean(1)
        inputs = {"original": f,
                  "pooled": pooled.repeat_interleave(pool, 0)[:n],
                  "tokens": centroids[tokens].repeat_interleave(pool, 0)[:n]}
        if not args.no_resynth:
            inputs["resynth"] = reader.features(codec.detokenize(tokens, codec.speaker_embedding(audio)))
        return inputs

    conditions = ["original", "pooled", "tokens"] + ([] if args.no_resynth else ["resynth"])
    read_set(reader, load_set(args.set).head(args.limit), conditions, inputs_of, args.out,
             {"set": args.set, "codec": args.codec})


if __name__ == "__main__":
    main()
