"""`unisono train ...` commands. Heavy imports stay inside the commands so the CLI starts fast."""

import typer

app = typer.Typer(help="Train the backbone through the report's stages: align, pretrain, cooldown, sft-asr, mtp.", no_args_is_help=True)
