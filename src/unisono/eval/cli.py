"""`unisono eval ...` commands. Heavy imports stay inside the commands so the CLI starts fast."""

import typer

app = typer.Typer(help="Evaluate systems: ASR accuracy and speed against peers, MTP analysis, codec resynthesis.", no_args_is_help=True)
