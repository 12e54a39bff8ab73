"""`unisono codec ...`: speech tokens from audio and audio from speech tokens, with the shipped codec
or any codec folder. Training the codec: `unisono train codec` (unisono.train.codec_cli).

    unisono codec resynth in.wav out.wav > tokens.txt                      # wav -> tokens -> wav
    unisono codec detokenize tokens.txt out.wav --reference voice.wav      # tokens -> wav in that voice (- - streams)
    unisono codec tokenize corpus/x/manifest.jsonl corpus/x_tok/manifest.jsonl   # meta.speech_tokens
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Speech tokens: tokenize audio, detokenize tokens in a voice, resynthesise.", no_args_is_help=True)


def _progress(description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


@app.command()
def resynth(
    audio: Path = typer.Argument(..., help="Input audio (any format soundfile reads)."),
    out: Path = typer.Argument(..., help="Output WAV (16 kHz)."),
    codec: Optional[Path] = typer.Option(None, help="Codec folder (default: the shipped one)."),
    reference: Optional[Path] = typer.Option(None, help="Voice reference clip (default: the input itself)."),
) -> None:
    """Audio -> speech tokens -> audio, and print the tokens."""
    from unisono.audio.io import AudioError, load_audio, save_audio
    from unisono.codec.codec import SpeechCodec, default_codec_path

    try:
        wave = load_audio(audio, max_duration_s=600)
        ref = load_audio(reference, max_duration_s=600) if reference else None
    except (AudioError, OSError) as e:
        raise typer.BadParameter(str(e)) from None
    c = SpeechCodec.load(codec or default_codec_path())
    tokens = c.tokenize(wave)
    voice = c.speaker_embedding(wave if ref is None else ref)
    try:
        save_audio(out, c.detokenize(tokens, voice), 16000)
    except OSError as e:
        raise typer.BadParameter(str(e), param_hint="OUT") from None
    typer.echo(" ".join(str(t) for t in tokens.tolist()))


def _parse_tokens(text: str, source: str) -> list[int]:
    fields = text.replace(",", " ").split()
    bad = next((f for f in fields if not f.lstrip("-").isdigit()), None)
    if bad is not None:
        raise typer.BadParameter(f"{bad[:40]!r} in {source} is not a token (tokens are integers)", param_hint="TOKENS")
    return [int(f) for f in fields]


@app.command()
def detokenize(
    tokens: str = typer.Argument(..., help="Speech tokens, whitespace- or comma-separated integers: a file, or - for "
                                           "standard input (what `unisono codec resynth` prints)."),
    out: str = typer.Argument(..., help="Output WAV (16 kHz), or - for raw 16-bit little-endian PCM (16 kHz, mono) on "
                                        "standard output, written as the audio is ready: with TOKENS - each line of "
                                        "tokens is rendered as it arrives (e.g. `... | aplay -r 16000 -f S16_LE`)."),
    reference: Path = typer.Option(..., help="Voice reference clip: the speech is rendered in its voice."),
    codec: Optional[Path] = typer.Option(None, help="Codec folder (default: the shipped one)."),
) -> None:
    """Speech tokens -> audio in the voice of a reference clip (640 samples per token); streamed with OUT -."""
    import io
    import sys

    import soundfile as sf
    import torch

    from unisono.audio.io import AudioError, load_audio, save_audio
    from unisono.codec.codec import SpeechCodec, default_codec_path

    try:
        ref = load_audio(reference, max_duration_s=600)
    except (AudioError, OSError) as e:
        raise typer.BadParameter(str(e), param_hint="--reference") from None
    try:
        lines = sys.stdin if tokens == "-" else [Path(tokens).read_text()]
    except OSError as e:
        raise typer.BadParameter(f"cannot read {tokens}: {e.strerror}", param_hint="TOKENS") from None
    source = "standard input" if tokens == "-" else tokens
    c = SpeechCodec.load(codec or default_codec_path())
    try:
        voice = c.speaker_embedding(ref)
    except ValueError as e:  # a reference too short to hear a voice in
        raise typer.BadParameter(str(e), param_hint="--reference") from None

    if out != "-":
        ids = [t for line in lines for t in _parse_tokens(line, source)]
        if not ids:
            raise typer.BadParameter(f"{source} holds no tokens", param_hint="TOKENS")
        try:
            wave = c.detokenize(torch.tensor(ids), voice)
        except ValueError as e:  # tokens outside the codebook
            raise typer.BadParameter(str(e), param_hint="TOKENS") from None
        try:
            save_audio(out, wave, 16000)
        except OSError as e:
            raise typer.BadParameter(str(e), param_hint="OUT") from None
        typer.echo(f"{len(ids)} tokens -> {len(wave) / 16000:.2f} s in {out}", err=True)
        return

    sink = sys.stdout.buffer

    def play(chunk) -> None:
        if chunk.size:  # the same conversion to 16-bit as a WAV written by save_audio
            buf = io.BytesIO()
            sf.write(buf, chunk, 16000, format="RAW", subtype="PCM_16")
            sink.write(buf.getvalue())
            sink.flush()

    stream, count = c.detokenizer_stream(voice), 0
    for line in lines:
        ids = _parse_tokens(line, source)
        try:
            play(stream.push(torch.tensor(ids, dtype=torch.long)))
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="TOKENS") from None
        count += len(ids)
    if not count:
        raise typer.BadParameter(f"{source} holds no tokens", param_hint="TOKENS")
    play(stream.flush())
    typer.echo(f"{count} tokens -> {count * 640 / 16000:.2f} s streamed", err=True)


@app.command()
def tokenize(
    manifest: Path = typer.Argument(..., help="Input manifest.jsonl (audio paths relative to its folder)."),
    out: Path = typer.Argument(..., help="Output manifest: the same rows with meta.speech_tokens (a rerun resumes)."),
    codec: Optional[Path] = typer.Option(None, help="Codec folder (default: the shipped one)."),
    batch: int = typer.Option(16, help="Clips tokenized together."),
    threads: int = typer.Option(2, help="CPU threads."),
) -> None:
    """Add speech tokens to every row of a manifest (the `speech_tokens` the training tasks read).
    Audio paths are rewritten relative to the output manifest's folder."""
    import dataclasses
    import os

    import torch
    from rich.console import Console

    from unisono.audio.io import AudioError, load_audio
    from unisono.data.manifest import ManifestError, ManifestWriter, read_manifest
    from unisono.codec.codec import SpeechCodec, default_codec_path

    torch.set_num_threads(threads)
    err = Console(stderr=True)
    try:
        rows = read_manifest(manifest)
        done = {u.id for u in read_manifest(out, skip_partial_tail=True)} if out.is_file() else set()
    except ManifestError as e:
        raise typer.BadParameter(str(e)) from None
    c = SpeechCodec.load(codec or default_codec_path())
    todo = [u for u in rows if u.id not in done]
    failed = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with ManifestWriter(out) as writer, _progress("tokenizing") as bar:
        task = bar.add_task("tokenize", total=len(rows), completed=len(rows) - len(todo))
        for start in range(0, len(todo), batch):
            group, audio = [], []
            for u in todo[start:start + batch]:
                try:
                    audio.append(load_audio(manifest.parent / u.audio, max_duration_s=600))
                    group.append(u)
                except (AudioError, OSError) as e:
                    err.print(f"[yellow]skipped[/yellow] {u.id}: {e}")
                    failed += 1
            for u, tokens in zip(group, c.tokenize(audio) if audio else []):
                rel = os.path.relpath((manifest.parent / u.audio).resolve(), out.parent.resolve())
                writer.write(dataclasses.replace(u, audio=rel, meta={**u.meta, "speech_tokens": tokens.tolist()}))
            bar.advance(task, len(todo[start:start + batch]))
    err.print(f"{len(rows) - failed} rows with speech tokens in {out}" + (f"; {failed} unreadable" if failed else ""))
