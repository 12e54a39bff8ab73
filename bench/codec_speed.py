"""Speed of the speech codec on a real clip: tokenizer and detokenizer real-time factors, and the
streaming detokenizer's first-chunk latency, against the clip's own duration.

    python bench/codec_speed.py                                   # the shipped codec, examples/lj001-0001.wav
    python bench/codec_speed.py --codec DIR --audio clip.wav --threads 4 --repeats 7
    python bench/codec_speed.py --device cuda

Each figure is the median of --repeats timed runs after one warm-up. RTF = compute time / audio
duration (below 1: faster than real time; its inverse, "x real time", is printed beside it). The
first-chunk latency is the time from the first token pushed (one token at a time, as a decoder
emits them) to the first audio out; the streamed audio is checked against the offline one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unisono.audio.io import load_audio  # noqa: E402
from unisono.codec.codec import SpeechCodec, default_codec_path  # noqa: E402
from unisono.eval.codec import first_chunk_latency  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lj001-0001.wav"


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls after a warm-up, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", type=Path, default=None, help="codec folder (default: the shipped one)")
    ap.add_argument("--audio", type=Path, default=EXAMPLE, help="a real speech clip (default: LJ001-0001, 9.7 s)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    try:
        audio = load_audio(args.audio)
        codec = SpeechCodec.load(args.codec or default_codec_path(), device=args.device)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    seconds = len(audio) / 16000
    with torch.inference_mode():
        t_tok, tokens = timed(lambda: codec.tokenize(audio), args.repeats)
        voice = codec.speaker_embedding(audio)
        t_detok, wave = timed(lambda: codec.detokenize(tokens, voice), args.repeats)
        latencies, streamed = [], None
        first_chunk_latency(codec, tokens, voice)  # warm-up
        for _ in range(args.repeats):
            latency, streamed = first_chunk_latency(codec, tokens, voice)
            latencies.append(latency)
    t_stream = statistics.median(latencies)
    figures = {
        "codec": str(args.codec or default_codec_path()), "audio": str(args.audio), "audio_s": round(seconds, 3),
        "tokens": int(len(tokens)), "threads": args.threads, "device": args.device, "repeats": args.repeats,
        "tokenizer_rtf": t_tok / seconds, "detokenizer_rtf": t_detok / seconds,
        "first_chunk_ms": 1000 * t_stream, "stream_matches_offline": bool(np.allclose(streamed, wave, atol=1e-4)),
    }
    print(f"{args.audio.name}: {seconds:.2f} s, {len(tokens)} tokens, {args.threads} thread(s) on {args.device}")
    print(f"tokenizer    RTF {figures['tokenizer_rtf']:.4f}  ({1 / figures['tokenizer_rtf']:.0f}x real time)")
    print(f"detokenizer  RTF {figures['detokenizer_rtf']:.4f}  ({1 / figures['detokenizer_rtf']:.0f}x real time)")
    print(f"streaming    first chunk {figures['first_chunk_ms']:.1f} ms "
          f"({figures['first_chunk_ms'] / 1000 / seconds:.4f} of the clip); same audio as offline: {figures['stream_matches_offline']}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
