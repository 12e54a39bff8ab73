"""The `unisono` command line: transcribe, speak, chat, serve, and the data/train/eval groups."""

from __future__ import annotations

import typer

from unisono.data.cli import app as data_app
from unisono.eval.cli import app as eval_app
from unisono.train.cli import app as train_app

app = typer.Typer(
    help="unisono: one audio-language backbone for ASR, TTS and realtime dialogue.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")


@app.command()
def version() -> None:
    """Print the version."""
    from unisono import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
