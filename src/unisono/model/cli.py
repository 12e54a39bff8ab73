"""`unisono convert ...`: bring pretrained weights into the formats unisono loads.

Heavy imports stay inside the commands so the CLI starts fast.
"""

from pathlib import Path

import typer

app = typer.Typer(help="Convert pretrained models into Hugging Face / unisono formats.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Convert pretrained models into Hugging Face / unisono formats."""


@app.command()
def whisper(
    src: str = typer.Argument(..., help='"bundled:whisper-tiny.en", or a CTranslate2 (faster-whisper) or Hugging Face Whisper directory'),
    dst: Path = typer.Argument(..., help="output directory (Hugging Face Whisper layout)"),
) -> None:
    """Convert a Whisper model to a Hugging Face directory (config.json, model.safetensors, tokenizer)."""
    from rich.console import Console

    from unisono.model.whisper_source import convert_whisper

    console = Console(stderr=True)
    with console.status(f"converting {src} ..."):
        out = convert_whisper(src, dst)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    console.print(f"[green]wrote[/green] {out}: {files}")


if __name__ == "__main__":
    app()
