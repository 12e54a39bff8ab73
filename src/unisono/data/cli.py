"""`unisono data ...` commands. Heavy imports stay inside the commands so the CLI starts fast."""

import typer

app = typer.Typer(help="Build and process speech corpora: synthesis, VAD, multi-ASR cross-validation, ROVER, tiers.", no_args_is_help=True)
