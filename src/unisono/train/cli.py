"""`unisono train ...` commands. Heavy imports stay inside the commands so the CLI starts fast.

    unisono train align    --config FILE [--out DIR] [--resume] [--init DIR] [--set KEY=VALUE]...
    unisono train pretrain | cooldown | sft-asr | sft-tts | sft-chat | mtp   (the same options)
    unisono train features MANIFEST... --out DIR [--encoder unisono-tiny]
    unisono train plot RUN... --out loss.png
    unisono train export RUN --out DIR [--dtype float16|int8]
    unisono train codec prepare | fit-tokenizer | vocoder | token2mel | vocoder-gta | export | recogniser-texts

Several processes: `torchrun --nproc_per_node N -m unisono.cli train STAGE ...` (FSDP2).
"""

from pathlib import Path
from typing import Optional

import typer

from unisono.train.codec_cli import app as codec_app

app = typer.Typer(help="Train the backbone through the report's stages (align, pretrain, cooldown, sft-asr, sft-tts, sft-chat, mtp), and the speech codec.",
                  no_args_is_help=True)

STAGE_HELP = {
    "align": "Alignment: the adaptor alone learns to feed the frozen decoder (ASR data).",
    "pretrain": "Vocabulary expansion with speech tokens, then the unified task mix (warm-up and main phases).",
    "cooldown": "Cool-down: the best data, longer sequences, instructive TTS.",
    "sft-asr": "ASR fine-tuning: encoder frozen, token-budget batches, SpecAugment, cosine LR.",
    "sft-tts": "TTS fine-tuning: text (and an instruction) -> speech tokens, with ASR rehearsal.",
    "sft-chat": "Spoken dialogue fine-tuning: a spoken turn -> the reply, with ASR and TTS rehearsal.",
    "mtp": "MTP head: branches alone on the frozen backbone, then jointly at a lower LR.",
}


def _train(stage: str, config: Optional[str], out: Optional[str], resume: bool, init: Optional[str],
           overrides: list[str], threads: Optional[int]) -> None:
    import logging
    import os

    from rich.console import Console
    from rich.logging import RichHandler

    from unisono.train.config import default_config_path, load_config
    from unisono.train.trainer import RunExistsError, Trainer

    err = Console(stderr=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)])
    path = Path(config) if config else default_config_path(stage)
    sets = list(overrides)
    if init:
        sets.append(f"model.init={init}")
    if threads:
        sets.append(f"run.threads={threads}")
    try:
        cfg = load_config(path, sets)
    except (ValueError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e), param_hint="--config / --set") from None
    if cfg.stage != stage:
        raise typer.BadParameter(f"{path} configures stage {cfg.stage!r}, not {stage!r}", param_hint="--config")
    run_dir = Path(out) if out else Path("runs") / stage
    try:
        model_dir = Trainer(cfg, run_dir, resume=resume).run()
    except RunExistsError as e:
        err.print(f"[red]error[/red] {e}")
        raise typer.Exit(code=2) from None
    except (ValueError, FileNotFoundError) as e:  # bad data or config found once the run starts
        err.print(f"[red]error[/red] {e}")
        raise typer.Exit(code=1) from None
    if os.environ.get("RANK", "0") == "0":
        err.print(f"[green]done[/green] {stage}: model written to {model_dir}")


def _register(stage: str) -> None:
    def command(
        config: Optional[str] = typer.Option(None, "--config", "-c", help=f"Stage config (default: the shipped configs/{stage}.yaml)."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help=f"Run folder (default: runs/{stage})."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
        init: Optional[str] = typer.Option(None, "--init", help="Start from this checkpoint directory (sets model.init)."),
        overrides: list[str] = typer.Option([], "--set", help="Override a config field: KEY=VALUE (e.g. phases.0.steps=100)."),
        threads: Optional[int] = typer.Option(None, help="CPU threads per process."),
    ) -> None:
        _train(stage, config, out, resume, init, overrides, threads)

    command.__doc__ = STAGE_HELP[stage]
    app.command(name=stage)(command)


for _stage in STAGE_HELP:
    _register(_stage)

app.add_typer(codec_app, name="codec")


@app.command()
def features(
    manifests: list[str] = typer.Argument(..., help="Manifest files (or folders holding manifest.jsonl)."),
    out: str = typer.Option(..., "--out", "-o", help="Feature store folder (an existing one is completed, not redone)."),
    encoder: str = typer.Option("unisono-tiny", help="A registered config name or a checkpoint directory: its encoder."),
    batch_seconds: float = typer.Option(120.0, help="Seconds of audio encoded together."),
    shard_clips: int = typer.Option(500, help="Clips per shard file (a killed run loses at most one shard's work)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads."),
) -> None:
    """Cache the frozen encoder's output for every clip (then set data.features to OUT)."""

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from unisono.model.config import CONFIGS, UnisonoConfig
    from unisono.model.encoder import AudioEncoder
    from unisono.train.data import Corpus
    from unisono.train.features import build_feature_store

    if threads:
        torch.set_num_threads(threads)
    err = Console(stderr=True)
    if (Path(encoder) / "config.json").is_file():
        from unisono.model.unisono import Unisono

        enc = Unisono.load(encoder).encoder
    elif encoder in CONFIGS:
        cfg = UnisonoConfig.from_name(encoder).encoder
        if not cfg.source:
            raise typer.BadParameter(f"config {encoder!r} has no pretrained encoder source", param_hint="--encoder")
        enc = AudioEncoder.from_source(cfg.source, cfg)
    else:
        raise typer.BadParameter(f"{encoder!r} is neither a checkpoint directory nor a registered config", param_hint="--encoder")
    enc.eval()
    try:
        corpus = Corpus.load(manifests)
    except (ValueError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e), param_hint="MANIFESTS") from None

    def clips():
        from unisono.audio.io import load_audio

        for row, root in zip(corpus.rows, corpus.roots):
            yield row.id, (lambda p=row.audio_path(root): load_audio(p, max_duration_s=30.0))

    with Progress(TextColumn("encoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  disable=not err.is_terminal) as bar:
        task = bar.add_task("encode", total=len(corpus.rows))
        store = build_feature_store(enc, clips(), out, batch_seconds=batch_seconds, shard_clips=shard_clips, progress=lambda n: bar.advance(task, n))
    err.print(f"[green]done[/green] {len(store)} clips in {out}")


@app.command()
def plot(
    runs: list[str] = typer.Argument(..., help="Run folders in training order (e.g. runs/align runs/sft-asr runs/mtp)."),
    out: str = typer.Option("loss.png", "--out", "-o", help="PNG to write."),
    window: int = typer.Option(10, help="Moving-average window in steps."),
) -> None:
    """Plot the loss curves of training runs."""
    from unisono.train.plot import plot_runs

    try:
        path = plot_runs(runs, out, window=window)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="RUNS") from None
    typer.echo(str(path))


@app.command()
def export(
    model: str = typer.Argument(..., help="A run folder (its model/) or a checkpoint directory."),
    out: str = typer.Option(..., "--out", "-o", help="Checkpoint directory to write (a speech/ folder already there is kept)."),
    dtype: str = typer.Option("float16", help="Stored precision: float16, bfloat16, float32, or int8 (matrices int8 with a scale per row, the rest float16)."),
    speech_tokens: int = typer.Option(0, help="Grow the speech-token block to this many codes first (0: as trained)."),
    remap_speech: Optional[tuple[Path, Path]] = typer.Option(
        None, metavar="OLD NEW",
        help="Move the speech rows onto a new codec codebook (of --speech-tokens codes; default: the largest new token + 1): "
             "two tokens.npy files of the same frames (a codec data folder tokenized with the old codebook and with the "
             "new); each new row is the mean of its frames' old rows."),
    drafts: int = typer.Option(0, help="Record the MTP drafts per pass inference uses by default (0: keep; see `unisono eval mtp --drafts`)."),
) -> None:
    """Write a trained model as a small inference checkpoint (e.g. the embedded default model)."""

    import torch

    from unisono.model.unisono import Unisono
    from unisono.train.model_setup import expand_speech_vocabulary, remap_speech_vocabulary

    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "int8": "int8"}
    if dtype not in dtypes:
        raise typer.BadParameter(f"choose one of {', '.join(dtypes)}", param_hint="--dtype")
    source = Path(model)
    if not (source / "config.json").is_file() and (source / "model" / "config.json").is_file():
        source = source / "model"
    try:
        net = Unisono.load(source)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="MODEL") from None
    if speech_tokens and not remap_speech:
        expand_speech_vocabulary(net, speech_tokens)
    if remap_speech:  # --speech-tokens then sizes the new codebook
        import numpy as np

        try:
            old_tokens, new_tokens = (np.load(p).astype(np.int64).reshape(-1) for p in remap_speech)
        except (OSError, ValueError) as e:  # missing, or not an array of token ids
            raise typer.BadParameter(f"cannot read the tokens: {e}", param_hint="--remap-speech") from None
        if old_tokens.max(initial=0) >= net.vocab.n_speech:
            raise typer.BadParameter(f"{remap_speech[0]} holds tokens past the model's {net.vocab.n_speech}", param_hint="--remap-speech")
        try:
            share = remap_speech_vocabulary(net, old_tokens, new_tokens, speech_tokens or int(new_tokens.max()) + 1)
        except ValueError as e:  # not the same frames
            raise typer.BadParameter(str(e), param_hint="--remap-speech") from None
        typer.echo(f"speech rows remapped onto {net.vocab.n_speech} codes (a new code's commonest old one covers {share:.0%} of its frames)")
    if drafts:
        if net.mtp is None or drafts > net.mtp.n_branches:
            raise typer.BadParameter(f"the model has {net.mtp.n_branches if net.mtp else 0} MTP branches", param_hint="--drafts")
        net.config.mtp.default_drafts = drafts
    path = net.save(out, dtype=dtypes[dtype])
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    typer.echo(f"{path} ({size / 2**20:.1f} MiB, {net.num_parameters() / 1e6:.1f} M parameters with the encoder)")
