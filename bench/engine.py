"""The decode engine under load: N requests at once through the Scheduler vs the same N one by one.

For each N in --concurrency, N requests arrive together (a burst). "one by one" decodes them with
one Session each, in turn; "batched" submits all N to a Scheduler (max_batch N) that decodes them
in one decoder pass per step. Reported per N and request kind: generated tokens per second over
the whole burst, p50/p95 latency (arrival to last token, queueing included), the speed-up, and how
many requests gave the same tokens both ways (float32 batches round differently from single rows,
so a near-tie can flip; float64 tests check exact equality).

Request kinds: "asr" (a real AN4 clip: the ASR prompt, text tokens + <|end|> allowed, the
ASR mode's token budget) and "text" (a text prompt continued for up to --text-tokens tokens).
Audio is encoded (encoder + adaptor) once before timing: only decoding is measured.

    nice -n 10 python bench/engine.py                              # embedded default model, CPU, 2 threads
    python bench/engine.py --concurrency 1,4,8,16 --kinds asr,text --threads 2
    python bench/engine.py --model DIR --manifest M.jsonl --no-mtp
    python bench/engine.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unisono.decode.scheduler import Scheduler, SchedulerConfig  # noqa: E402
from unisono.decode.session import Session, SessionConfig  # noqa: E402
from unisono.modes.asr import _max_tokens, asr_prompt, text_tokens_mask  # noqa: E402
from unisono.model.vocab import Turn  # noqa: E402

# the real speech sets beside the checkout (../shared), or under $UNISONO_SHARED
SHARED = Path(os.environ.get("UNISONO_SHARED") or Path(__file__).resolve().parents[2] / "shared")
DEFAULT_MANIFEST = SHARED / "data" / "real_speech" / "an4_test" / "manifest.jsonl"
TEXT_PROMPTS = [
    "the quick brown fox jumps over the lazy dog",
    "printing in the only sense with which we are at present concerned",
    "one two three four five six seven eight nine",
    "speech recognition on a small computer",
    "tell me about the weather in the city today",
    "the history of the printed book begins with",
]


def asr_requests(model, manifest: Path, n: int, device, mtp: bool):
    """(prompt embeddings (T, D), SessionConfig) per clip, and the encoding time per clip."""
    from unisono.audio.features import batch_log_mel
    from unisono.audio.io import load_audio

    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()][:n]
    allowed = text_tokens_mask(model)
    out, t0 = [], time.perf_counter()
    for r in rows:
        clip = load_audio(manifest.parent / r["audio"])
        mel, lengths = batch_log_mel([clip], n_mels=model.config.encoder.n_mels)
        with torch.no_grad():
            feats, flen = model.encode_audio(mel.to(device), lengths.to(device))
            ids = torch.tensor([model.vocab.encode_prompt(asr_prompt(int(flen[0]))).ids], device=device)
            emb = model.embed_prompt(ids, feats, flen)[0]
        cfg = SessionConfig(max_new_tokens=_max_tokens(len(clip) / 16000), stop_ids=(model.vocab.end_id,),
                            allowed=allowed, mtp=mtp)
        out.append((emb, cfg))
    return out, (time.perf_counter() - t0) / max(1, len(rows))


def text_requests(model, n: int, device, mtp: bool, max_new: int):
    allowed = text_tokens_mask(model)
    out = []
    for i in range(n):
        ids = torch.tensor([model.vocab.encode_prompt([Turn("user", [TEXT_PROMPTS[i % len(TEXT_PROMPTS)]])]).ids], device=device)
        with torch.no_grad():
            emb = model.embed_tokens(ids)[0]
        out.append((emb, SessionConfig(max_new_tokens=max_new, stop_ids=(model.vocab.end_id,), allowed=allowed, mtp=mtp)))
    return out


def one_by_one(model, requests):
    t0, latencies, outputs = time.perf_counter(), [], []
    for emb, cfg in requests:
        s = Session(model, cfg)
        s.prefill(emb)
        outputs.append(list(s.tokens()))
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - t0, latencies, outputs


def batched(model, requests):
    scheduler = Scheduler(model, SchedulerConfig(max_batch=len(requests), max_batch_tokens=1 << 20))
    t0 = time.perf_counter()
    handles = [scheduler.submit(emb, cfg) for emb, cfg in requests]
    latencies: dict[int, float] = {}
    while scheduler.step():
        now = time.perf_counter()
        for i, h in enumerate(handles):
            if h.done and i not in latencies:
                latencies[i] = now - t0
    now = time.perf_counter()
    for i, h in enumerate(handles):
        latencies.setdefault(i, now - t0)
        if h.error:
            raise RuntimeError(f"request {i} failed: {h.error}")
    return now - t0, [latencies[i] for i in range(len(handles))], [h.output for h in handles]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint directory (default: the embedded unisono-tiny)")
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="JSONL with 'audio' paths (ASR requests)")
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument("--kinds", default="asr,text")
    ap.add_argument("--text-tokens", type=int, default=48, help="max new tokens of a text request")
    ap.add_argument("--no-mtp", action="store_true", help="plain greedy decoding (no MTP drafts)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    if "asr" in args.kinds and not args.manifest.is_file():
        ap.error(f"no manifest at {args.manifest}: give --manifest, set UNISONO_SHARED, or run --kinds text")

    from unisono.model.unisono import Unisono, default_model_path

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = Unisono.load(args.model or default_model_path(), device=device)
    levels = [int(c) for c in args.concurrency.split(",")]
    mtp = not args.no_mtp
    print(f"model {args.model or 'unisono-tiny (embedded)'}  device {args.device}  threads {args.threads}  "
          f"mtp {'on' if mtp else 'off'}  torch {torch.__version__}")
    pools = {}
    if "asr" in args.kinds:
        pools["asr"], enc = asr_requests(model, args.manifest, max(levels), device, mtp)
        print(f"asr: {len(pools['asr'])} AN4 clips, encoder + adaptor {enc * 1000:.0f} ms per clip (not timed below)")
    if "text" in args.kinds:
        pools["text"] = text_requests(model, max(levels), device, mtp, args.text_tokens)
    # warm-up: first calls allocate
    for pool in pools.values():
        one_by_one(model, pool[:1])
        batched(model, pool[:2])

    print("\n| kind | N | mode | tokens | tok/s | p50 latency s | p95 latency s | speed-up | same tokens |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, pool in pools.items():
        for n in levels:
            reqs = pool[:n]
            t_seq, lat_seq, out_seq = one_by_one(model, reqs)
            t_bat, lat_bat, out_bat = batched(model, reqs)
            tokens = sum(len(o) for o in out_seq)
            tokens_bat = sum(len(o) for o in out_bat)
            same = sum(a == b for a, b in zip(out_seq, out_bat))
            print(f"| {kind} | {n} | one by one | {tokens} | {tokens / t_seq:.1f} | {statistics.median(lat_seq):.2f} | "
                  f"{pct(lat_seq, 0.95):.2f} | 1.00 | |")
            print(f"| {kind} | {n} | batched | {tokens_bat} | {tokens_bat / t_bat:.1f} | {statistics.median(lat_bat):.2f} | "
                  f"{pct(lat_bat, 0.95):.2f} | {(tokens_bat / t_bat) / (tokens / t_seq):.2f} | {same}/{n} |", flush=True)


if __name__ == "__main__":
    main()
