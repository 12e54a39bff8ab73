"""`unisono codec ...`: build, train, export and try the speech codec (tokenizer + detokenizer).

    unisono codec prepare corpus/codec_data                 # audio + encoder features, held-out set
    unisono codec fit-tokenizer corpus/codec_data runs/codec  # k-means codebook
    unisono codec train vocoder runs/codec                  # mel -> waveform
    unisono codec train token2mel runs/codec                # tokens + voice -> mel
    unisono codec export runs/codec src/unisono/assets/speech
    unisono codec resynth in.wav out.wav
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Speech tokens: prepare data, fit the tokenizer, train the detokenizer, export, resynthesise.",
                  no_args_is_help=True)

SYNTH = Path("corpus/synth/manifest.jsonl")
REAL_TRAIN = Path("/work/shared/data/real_speech_train")


def _progress(description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


@app.command()
def prepare(
    out: Path = typer.Argument(..., help="Folder to write (a rerun resumes it)."),
    synth: Path = typer.Option(SYNTH, help="Synthetic corpus manifest (clean clips are used)."),
    real: list[Path] = typer.Option(
        [REAL_TRAIN / "an4_train/manifest.jsonl", REAL_TRAIN / "speechocean762_train/manifest.jsonl"],
        help="Real-speech training manifests (never the evaluation sets).",
    ),
    english: int = typer.Option(3000, help="Synthetic English clips."),
    mandarin: int = typer.Option(600, help="Synthetic Mandarin clips."),
    test_clips: int = typer.Option(45, help="Held-out synthetic English clips (texts kept out of training)."),
    layers: str = typer.Option("3,4", help="Encoder layers whose features are stored (comma-separated)."),
    threads: int = typer.Option(2, help="CPU threads."),
) -> None:
    """Store audio and frozen-encoder features of the training clips, and a held-out English set."""
    import torch

    from unisono.train.codec_data import PrepareConfig, SourceSpec, prepare as run

    torch.set_num_threads(threads)
    sources = [SourceSpec(str(synth), english, ("en",)), SourceSpec(str(synth), mandarin, ("zh",))]
    sources += [SourceSpec(str(m), None, (), clean_only=False, per_engine=False) for m in real]
    config = PrepareConfig(sources=sources, layers=tuple(int(x) for x in layers.split(",")),
                           test_source=str(synth), test_clips=test_clips)
    with _progress("encoding clips") as bar:
        task = bar.add_task("encode", total=None)
        data = run(config, out, progress=lambda done, total: bar.update(task, completed=done, total=total))
    typer.echo(f"{len(data)} clips, {sum(c['samples'] for c in data.clips) / 16000 / 3600:.2f} h, "
               f"{data.total_tokens} tokens in {out}; held-out set in {out / 'test-en'}")
