"""MTP-verified decoding vs plain greedy decoding, same model, same inputs, one run.

Reports decoder passes per token, accepted tokens per pass, acceptance by draft position,
the wall-clock decode-time ratio (greedy / MTP: > 1 means MTP is faster), and checks that both
produce the same tokens.

    python bench/mtp_vs_greedy.py                                   # embedded default, real speech
    python bench/mtp_vs_greedy.py --model DIR --manifest M.jsonl --limit 40 --batch-size 1
    python bench/mtp_vs_greedy.py --device cuda                     # on a GPU
    python bench/mtp_vs_greedy.py --random-config unisono-tiny     # random weights (meaningless acceptance)

Audio encoding is done once, outside the timed region: only decoding is compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unisono.decode.generate import GenerationConfig, generate  # noqa: E402
from unisono.modes.asr import _max_tokens, asr_prompt, text_tokens_mask  # noqa: E402


def load_inputs(manifest: Path, limit: int):
    from unisono.audio.io import load_audio

    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()][:limit]
    clips = [load_audio(manifest.parent / r["audio"]) for r in rows]
    return clips


def prepare(model, clips, device):
    """Prompt embeddings for each clip, computed once (encoder + adaptor)."""
    from unisono.audio.features import batch_log_mel

    prepared = []
    for clip in clips:
        mel, lengths = batch_log_mel([clip], n_mels=model.config.encoder.n_mels)
        with torch.no_grad():
            feats, flen = model.encode_audio(mel.to(device), lengths.to(device))
            p = model.vocab.encode_prompt(asr_prompt(int(flen[0])))
            ids = torch.tensor([p.ids], device=device)
            emb = model.embed_prompt(ids, feats, flen)
        prepared.append((emb, torch.ones(ids.shape, dtype=torch.bool, device=device), len(clip) / 16000))
    return prepared


def run(model, prepared, mtp: bool, batch_size: int, device):
    allowed = text_tokens_mask(model)
    tokens, stats, elapsed = [], None, 0.0
    for k in range(0, len(prepared), batch_size):
        chunk = prepared[k : k + batch_size]
        L = max(e.shape[1] for e, _, _ in chunk)
        D = chunk[0][0].shape[-1]
        emb = torch.zeros(len(chunk), L, D, device=device, dtype=chunk[0][0].dtype)
        mask = torch.zeros(len(chunk), L, dtype=torch.bool, device=device)
        for b, (e, m, _) in enumerate(chunk):
            emb[b, L - e.shape[1] :], mask[b, L - e.shape[1] :] = e[0], True
        cfg = GenerationConfig(max_new_tokens=_max_tokens(max(d for _, _, d in chunk)), mtp=mtp, stop_ids=(model.vocab.end_id,))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = generate(model, emb, mask, cfg, allowed=allowed)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - t0
        tokens += out.tokens
        stats = out.stats if stats is None else stats.merge(out.stats)
    return tokens, stats, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint directory (default: embedded unisono-tiny)")
    ap.add_argument("--random-config", default=None, help="build a random-weight model from this registered config")
    ap.add_argument("--manifest", type=Path, default=None, help="JSONL manifest of real speech")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compute-type", default="float32", choices=["float32", "int8"], help="int8: quantised Linear layers (CPU)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from unisono.model.unisono import Unisono, build, default_model_path

    if args.random_config:
        from unisono.model.config import UnisonoConfig

        torch.manual_seed(0)
        model = build(UnisonoConfig.from_name(args.random_config), ["a b c d e f g h i j k l m n o p"] * 10, vocab_size=300)
        model = model.to(device).eval()
        if args.compute_type == "int8":
            from unisono.model.quantize import quantize_int8

            quantize_int8(model.requires_grad_(False))
        desc = f"random {args.random_config}"
    else:
        path = args.model or default_model_path()
        model = Unisono.load(path, device=device, compute_type=args.compute_type)
        desc = str(path)

    manifest = args.manifest
    if manifest is None:
        here = Path(__file__).resolve().parents[1]
        for c in (here.parent / "shared", here / "shared"):
            if (c / "data/real_speech/ljspeech_lj001/manifest.jsonl").is_file():
                manifest = c / "data/real_speech/ljspeech_lj001/manifest.jsonl"
                break
    if manifest is None:
        sys.exit("no manifest found: pass --manifest")
    clips = load_inputs(manifest, args.limit)
    prepared = prepare(model, clips, device)

    run(model, prepared[:2], True, args.batch_size, device)  # warm-up
    run(model, prepared[:2], False, args.batch_size, device)
    g_times, m_times = [], []
    for _ in range(args.repeats):
        g_tokens, g_stats, t = run(model, prepared, False, args.batch_size, device)
        g_times.append(t)
        m_tokens, m_stats, t = run(model, prepared, True, args.batch_size, device)
        m_times.append(t)
    g, m = statistics.median(g_times), statistics.median(m_times)
    identical = g_tokens == m_tokens
    result = {
        "model": desc,
        "device": str(device),
        "compute_type": args.compute_type,
        "threads": torch.get_num_threads(),
        "manifest": str(manifest),
        "utterances": len(prepared),
        "audio_seconds": round(sum(d for _, _, d in prepared), 2),
        "batch_size": args.batch_size,
        "identical_output": identical,
        "tokens": m_stats.tokens,
        "greedy_passes": g_stats.passes,
        "mtp_passes": m_stats.passes,
        "tokens_per_pass_greedy": round(g_stats.tokens_per_pass, 3),
        "tokens_per_pass_mtp": round(m_stats.tokens_per_pass, 3),
        "mean_accepted_drafts": round(m_stats.mean_accepted, 3),
        "acceptance_by_position": [round(r, 3) for r in m_stats.acceptance_rate],
        "accepted_hist": m_stats.accepted_hist,
        "greedy_decode_s": round(g, 4),
        "mtp_decode_s": round(m, 4),
        "speedup_greedy_over_mtp": round(g / m, 3) if m else None,
    }
    for k, v in result.items():
        print(f"{k:>26}: {v}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if not identical:
        sys.exit("MTP output differs from greedy output")


if __name__ == "__main__":
    main()
