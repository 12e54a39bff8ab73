"""Dense or MoE decoder for the embedded default: the same recipe, the same batches, one run.

Trains each candidate decoder from scratch as an ASR model (`sft-asr`, cached encoder frames,
identical data stream) for the same number of steps, then reports:
- accuracy: mean next-token loss and accuracy over the last quarter of the steps (both
  candidates saw the very same batches, so the numbers compare directly);
- speed: decode cost per token (one-token steps against a KV cache after a 150-position
  prompt, median of many) and prefill cost, on this machine's CPU with the given threads;
- size: stored and active parameters.

The MoE candidate keeps the dense decoder's active MLP width (top-k experts x expert width =
the dense intermediate size), so it has the same compute per token and more parameters.

    python bench/decoder_choice.py --train ../shared/data/real_speech_train/an4_train \
        --train corpus/synth --features runs/tiny/features --steps 250 --out runs/decoder_choice
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

from unisono.model.unisono import Unisono  # noqa: E402
from unisono.train.config import StageConfig  # noqa: E402
from unisono.train.trainer import Trainer  # noqa: E402

CANDIDATES = {
    "dense": {"mtp__n_branches": 0},
    "moe": {
        "mtp__n_branches": 0,
        "decoder__family": "qwen3_moe",
        "decoder__num_experts": 8,
        "decoder__num_experts_per_tok": 2,
        "decoder__moe_intermediate_size": 512,  # 2 x 512 active = the dense 1024
        "decoder__decoder_sparse_step": 1,
        "decoder__norm_topk_prob": True,
    },
}


def train(name: str, args) -> Path:
    cfg = StageConfig.from_dict({
        "stage": "sft-asr",
        "model": {"init": "unisono-tiny", "overrides": CANDIDATES[name]},
        "data": {"train": args.train, "features": args.features, "max_tokens": args.max_tokens},
        "run": {"threads": args.threads, "checkpoint_every": 10_000, "seed": 0},
        "phases": [{"name": "sft", "steps": args.steps, "trainable": ["adaptor.*", "decoder.*"], "lr": 1e-3,
                    "warmup_steps": 20, "ctc_weight": args.ctc_weight}],
    })
    out = Path(args.out) / name
    if not (out / "model" / "config.json").is_file():
        Trainer(cfg, out, resume=True, progress=False).run()
    return out


@torch.no_grad()
def decode_cost(model: Unisono, prompt: int = 150, steps: int = 64, repeats: int = 5) -> tuple[float, float]:
    """(ms per one-token step with a KV cache, ms per prefill of `prompt` positions)."""
    dim = model.config.decoder.hidden_size
    per_token, prefill = [], []
    for _ in range(repeats):
        cache = model.new_kv_cache()
        emb = torch.randn(1, prompt, dim) * 0.02
        t0 = time.perf_counter()
        model.decoder_forward(emb, torch.ones(1, prompt, dtype=torch.long), torch.arange(prompt)[None], cache)
        prefill.append(time.perf_counter() - t0)
        for s in range(steps):
            x = model.embed_tokens(torch.tensor([[5 + s]]))
            t0 = time.perf_counter()
            model.decoder_forward(x, torch.ones(1, prompt + s + 1, dtype=torch.long), torch.tensor([[prompt + s]]), cache)
            per_token.append(time.perf_counter() - t0)
    return 1000 * statistics.median(per_token), 1000 * statistics.median(prefill)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="append", required=True, help="manifest or folder (repeatable)")
    ap.add_argument("--features", default=None, help="feature store of the frozen encoder (unisono train features)")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--max-tokens", type=int, default=6000)
    ap.add_argument("--ctc-weight", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/decoder_choice")
    ap.add_argument("--candidates", default="dense,moe")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    results = {}
    for name in args.candidates.split(","):
        run = train(name, args)
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        tail = rows[-max(1, len(rows) // 4):]
        model = Unisono.load(run / "model")
        decoder_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith("decoder.model.layers"))
        active = decoder_params
        if model.is_moe:
            hf = model.decoder.config
            expert = 3 * hf.hidden_size * hf.moe_intermediate_size
            active -= hf.num_hidden_layers * (hf.num_experts - hf.num_experts_per_tok) * expert
        ms_token, ms_prefill = decode_cost(model)
        results[name] = {
            "loss_main_last_quarter": statistics.mean(r["loss_main"] for r in tail),
            "accuracy_last_quarter": statistics.mean(r["accuracy_main"] for r in tail),
            "seconds_per_step": statistics.median(r["seconds"] for r in rows),
            "decoder_layer_params_M": decoder_params / 1e6,
            "active_layer_params_M": active / 1e6,
            "ms_per_token": ms_token,
            "ms_prefill_150": ms_prefill,
        }
        print(name, json.dumps(results[name]), flush=True)
    if {"dense", "moe"} <= set(results):
        d, m = results["dense"], results["moe"]
        results["moe_over_dense"] = {
            "loss_main": m["loss_main_last_quarter"] - d["loss_main_last_quarter"],
            "ms_per_token": m["ms_per_token"] / d["ms_per_token"],
            "seconds_per_step": m["seconds_per_step"] / d["seconds_per_step"],
            "stored_params": m["decoder_layer_params_M"] / d["decoder_layer_params_M"],
        }
    print(json.dumps(results, indent=2))
    (Path(args.out) / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
