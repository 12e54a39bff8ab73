"""`unisono train codec ...`: build and train the speech codec, on the one Trainer.

    unisono train codec prepare data/ --real my/recordings/manifest.jsonl   # audio + encoder features, held-out set
    unisono train codec fit-tokenizer data/ runs/codec                     # the k-means codebook, every frame's token
    unisono train codec vocoder data/ runs/codec                           # mel -> waveform
    unisono train codec token2mel data/ runs/codec                         # tokens + voice -> mel
    unisono train codec vocoder-gta data/ runs/codec                       # the vocoder on the token-to-mel model's mels
    unisono train codec export runs/codec out/speech                       # a codec folder (SpeechCodec.load)
    unisono train codec recogniser-texts real/manifest.jsonl heard.jsonl   # texts for the transcript loss
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Train the speech codec: prepare data, fit the tokenizer, train the detokenizer, export.",
                  no_args_is_help=True)

SYNTH = Path("corpus/synth/manifest.jsonl")
REAL_TRAIN_SETS = ("an4_train", "speechocean762_train")


def _default_real() -> list[Path]:
    """The real training sets of the shared data folder ($UNISONO_SHARED, else ../shared), looked up
    only when --real is not given."""
    import os

    for base in (os.environ.get("UNISONO_SHARED"), Path.cwd().parent / "shared", Path.cwd() / "shared"):
        folder = Path(base) / "data/real_speech_train" if base else None
        if folder is not None and folder.is_dir():
            return [folder / name / "manifest.jsonl" for name in REAL_TRAIN_SETS]
    raise typer.BadParameter("no shared data folder with data/real_speech_train (set UNISONO_SHARED, or give the "
                             "real-speech manifests with --real)", param_hint="--real")


def _progress(description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def _say():
    from rich.console import Console

    err = Console(stderr=True)
    return lambda s: err.print(s, highlight=False)


@app.command()
def prepare(
    out: Path = typer.Argument(..., help="Folder to write (a rerun resumes it)."),
    synth: list[Path] = typer.Option([SYNTH], help="Synthetic corpus manifest(s); clean clips are used (repeat for several)."),
    real: list[Path] = typer.Option([], help="Real-speech training manifests, never the evaluation sets (repeatable; "
                                             "default: an4_train and speechocean762_train of the shared data folder)."),
    english: int = typer.Option(3000, help="Synthetic English clips, per synthetic manifest."),
    mandarin: int = typer.Option(600, help="Synthetic Mandarin clips, per synthetic manifest."),
    test_source: Optional[Path] = typer.Option(None, help="Manifest the held-out English set is drawn from (default: the first --synth)."),
    test_clips: int = typer.Option(45, help="Held-out synthetic English clips (texts kept out of training)."),
    exclude_texts: list[Path] = typer.Option([], help="Evaluation manifest whose texts are kept out of training (repeat for several)."),
    layers: str = typer.Option("3,4", help="Encoder layers whose features are stored (comma-separated)."),
    threads: int = typer.Option(2, help="CPU threads."),
) -> None:
    """Store audio and frozen-encoder features of the training clips, and a held-out English set."""
    import torch

    from unisono.train.codec_data import PrepareConfig, SourceSpec, prepare as run

    real = real or _default_real()
    for m in [*synth, *real, *exclude_texts, *([test_source] if test_source else [])]:
        if not m.is_file():
            raise typer.BadParameter(f"{m} does not exist")
    try:
        chosen = tuple(int(x) for x in layers.split(","))
    except ValueError:
        raise typer.BadParameter(f"{layers!r}: comma-separated layer numbers", param_hint="--layers") from None
    torch.set_num_threads(threads)
    sources = [SourceSpec(str(m), n, (lang,)) for m in synth for n, lang in ((english, "en"), (mandarin, "zh"))]
    sources += [SourceSpec(str(m), None, (), clean_only=False, per_engine=False) for m in real]
    config = PrepareConfig(sources=sources, layers=chosen, test_source=str(test_source or synth[0]), test_clips=test_clips,
                           exclude_texts=[str(m) for m in exclude_texts])
    with _progress("encoding clips") as bar:
        task = bar.add_task("encode", total=None)
        try:
            data = run(config, out, progress=lambda done, total: bar.update(task, completed=done, total=total))
        except ValueError as e:  # a folder prepared with other settings
            raise typer.BadParameter(str(e), param_hint="OUT") from None
    typer.echo(f"{len(data)} clips, {sum(c['samples'] for c in data.clips) / 16000 / 3600:.2f} h, "
               f"{data.total_tokens} tokens in {out}; held-out set in {out / 'test-en'}")


def _codec_config(run: Path, layer: int | None = None, codebook: int | None = None):
    """The run's CodecConfig (run/codec.json), created from the defaults and the options on first use."""
    from unisono.codec.config import CodecConfig

    path = run / "codec.json"
    if path.is_file():
        config = CodecConfig.from_dict(json.loads(path.read_text()))
        t = config.tokenizer
        if (layer and layer != t.layer) or (codebook and codebook != t.codebook_size):
            raise typer.BadParameter(f"{run} was set up with layer {t.layer} and a codebook of {t.codebook_size}; use another run folder")
        return config
    config = CodecConfig()
    if layer:
        config.tokenizer.layer = layer
    if codebook:
        config.tokenizer.codebook_size = codebook
    run.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(), indent=2))
    return config


def _oversample_pairs(items: list[str]) -> list[tuple[str, float]]:
    """--oversample MANIFEST=WEIGHT options -> (manifest, weight) pairs."""
    pairs = []
    for item in items:
        manifest, _, weight = item.rpartition("=")
        try:
            pairs.append((manifest, float(weight)))
        except ValueError:
            manifest = ""
        if not manifest or not Path(manifest).is_file():
            raise typer.BadParameter(f"{item!r}: expected MANIFEST=WEIGHT with an existing manifest", param_hint="--oversample")
    return pairs


OVERSAMPLE_HELP = "the real speech among synthetic, so that its share follows its share of training draws"


@app.command("fit-tokenizer")
def fit_tokenizer(
    data: Path = typer.Argument(..., help="Folder written by `unisono train codec prepare`."),
    run: Path = typer.Argument(..., help="Run folder (codec.json, tokenizer.safetensors, tokens.npy)."),
    layer: int = typer.Option(3, help="Encoder layer to quantise (3 of Whisper tiny.en's 4 resynthesises better than its output)."),
    codebook: int = typer.Option(1024, help="Codebook size (the shipped codec has 4096)."),
    codebook_of: Optional[Path] = typer.Option(
        None, help="Reuse the codebook of this run or of an exported codec folder (e.g. the shipped model's speech/, whose "
                   "settings the run then takes) instead of fitting one: new data, same token ids."),
    oversample: list[str] = typer.Option(
        [], metavar="MANIFEST=WEIGHT",
        help=f"Weigh the frames of this source manifest's clips WEIGHT times the others' in k-means; repeatable. E.g. {OVERSAMPLE_HELP}."),
    threads: int = typer.Option(2, help="CPU threads."),
) -> None:
    """Fit the k-means codebook and tokenize every prepared clip."""
    import torch

    from unisono.codec.codebook import read_codebook
    from unisono.train.codec_data import CodecData
    from unisono.train.codec_kmeans import fit_codebook, tokenize_data

    torch.set_num_threads(threads)
    pairs = _oversample_pairs(oversample)
    say = _say()
    if codebook_of is None:
        try:
            prepared = CodecData(data, layer=layer)
            weights = prepared.draw_weights(pairs) if pairs else None
        except (FileNotFoundError, ValueError) as e:  # no such folder or layer; a manifest with none of the clips
            raise typer.BadParameter(str(e)) from None
        config = _codec_config(run, layer, codebook)
        centroids = fit_codebook(prepared, config.tokenizer.codebook_size, clip_weights=weights, log=say)
        tokenize_data(prepared, run, centroids, log=say)
        return
    if pairs:
        raise typer.BadParameter("it weighs the frames of a codebook being fitted: not with --codebook-of", param_hint="--oversample")
    try:
        book = read_codebook(codebook_of)
        prepared = CodecData(data, layer=book.layer)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--codebook-of") from None
    if book.centroids.shape[1] != prepared.features.shape[1]:
        raise typer.BadParameter(f"its {book.centroids.shape[1]}-wide entries do not fit the {prepared.features.shape[1]}-wide "
                                 f"features of {data}", param_hint="--codebook-of")
    if book.settings is not None and not (run / "codec.json").is_file():  # an exported codec: its settings become the run's
        run.mkdir(parents=True, exist_ok=True)
        (run / "codec.json").write_text(json.dumps(book.settings.to_dict(), indent=2))
    _codec_config(run, book.layer, len(book.centroids))
    tokenize_data(prepared, run, book.centroids, log=say)


def _train(job: str, data: Path, run: Path, resume: bool, threads: int, device: str, **options) -> None:
    import torch

    from unisono.train.codec_jobs import CodecJobConfig, train_job
    from unisono.train.trainer import RunExistsError

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise typer.BadParameter(f"{device}: choose cpu or cuda", param_hint="--device")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise typer.BadParameter(f"{device}: this torch sees no CUDA device", param_hint="--device")
    if not (run / "codec.json").is_file():
        raise typer.BadParameter(f"{run} holds no codec.json: run `unisono train codec fit-tokenizer` first", param_hint="RUN")
    for manifest in options.get("transcript_from", []):
        if not Path(manifest).is_file():
            raise typer.BadParameter(f"{manifest}: no such manifest", param_hint="--transcript-from")
    options["oversample"] = _oversample_pairs(options.get("oversample", []))
    init_from = options.get("init_from")
    options["init_from"] = str(init_from) if init_from else None
    options["transcript_from"] = [str(m) for m in options.get("transcript_from", [])]
    torch.set_num_threads(threads)
    say = _say()
    try:
        cfg = CodecJobConfig(job=job, data=str(data), run=str(run), threads=threads, device=device, **options)
        result = train_job(cfg, _codec_config(run), resume=resume, log=say)
    except RunExistsError as e:
        say(f"[red]error[/red] {e}")
        raise typer.Exit(code=2) from None
    except (FileNotFoundError, ValueError) as e:  # missing parts, or an --oversample / --transcript-from manifest with none of the clips
        raise typer.BadParameter(str(e)) from None
    say(f"[green]done[/green] {job}: {result}")


def _data_argument():
    return typer.Argument(..., help="Folder written by `unisono train codec prepare`.")


def _run_argument():
    return typer.Argument(..., help="Codec run folder (codec.json, tokens.npy); the job trains in RUN/JOB.")


def _steps_option():
    return typer.Option(4000, help="Optimiser steps (warm-up 200, then cosine decay to 5% of --lr).")


def _lr_option():
    return typer.Option(1e-3, help="Peak learning rate.")


def _resume_option():
    return typer.Option(False, "--resume", help="Continue the job in RUN/JOB from its last checkpoint.")


def _threads_option():
    return typer.Option(1, help="CPU threads.")


def _device_option():
    return typer.Option("cpu", help="cpu or cuda: where the models and every loss run (clips are read and cut on the CPU).")


def _init_from_option():
    return typer.Option(None, help="Fine-tune: start from the weights of an exported codec folder (e.g. the shipped model's "
                                    "speech/) or of another run's job folder (e.g. runs/old/token2mel).")


def _self_reference_option():
    return typer.Option(0.0, min=0.0, max=1.0, help="Share of crops whose voice reference is a span of their own clip "
                                                          "instead of another clip of the same speaker.")


@app.command()
def vocoder(
    data: Path = _data_argument(), run: Path = _run_argument(), steps: int = _steps_option(), lr: float = _lr_option(),
    init_from: Optional[Path] = _init_from_option(), resume: bool = _resume_option(), threads: int = _threads_option(),
    device: str = _device_option(),
) -> None:
    """The vocoder (mel -> audio) on real mels: mel L1 + multi-resolution STFT loss, 16 x 0.8 s segments a step."""
    _train("vocoder", data, run, resume, threads, device, steps=steps, lr=lr, init_from=init_from)


@app.command()
def token2mel(
    data: Path = _data_argument(), run: Path = _run_argument(), steps: int = _steps_option(), lr: float = _lr_option(),
    init_from: Optional[Path] = _init_from_option(),
    oversample: list[str] = typer.Option([], metavar="MANIFEST=WEIGHT", help=f"Draw the clips of this source manifest "
                                         f"WEIGHT times as often as the others; repeatable. E.g. {OVERSAMPLE_HELP}."),
    self_reference: float = _self_reference_option(),
    cycle_weight: float = typer.Option(0.0, min=0.0, help="Weight of the re-encoding loss: the predicted mel, voiced by a "
                                       "frozen vocoder (the run's vocoder-gta, else its vocoder, else --init-from's), should "
                                       "give the tokenizer's encoder the real audio's frames at the token layer; 0 is off."),
    transcript_weight: float = typer.Option(0.0, min=0.0, help="Weight of the transcript loss: whole clips, resynthesised "
                                            "through the same frozen vocoder, are read by the tokenizer's Whisper model, its "
                                            "decoder fed their text; 0 is off. That model is also the recogniser `unisono eval "
                                            "codec` scores with: judge such a codec with an independent one too."),
    voice_weight: float = typer.Option(0.0, min=0.0, help="With --transcript-weight: weight of an L1 between the long-term "
                                       "spectra (log-mel averaged over time) of each transcript clip's resynthesis and the clip's."),
    transcript_from: list[Path] = typer.Option([], metavar="MANIFEST", help="The transcript loss reads only the clips of this "
                                               "source manifest, with its texts (repeatable; the first manifest's text of a clip "
                                               "wins; default: every clip with its stored text). Give corpora transcribed in "
                                               "capitals as the recogniser writes them (`unisono train codec recogniser-texts`)."),
    resume: bool = _resume_option(), threads: int = _threads_option(), device: str = _device_option(),
) -> None:
    """The token-to-mel model and speaker encoder (tokens + voice -> mel): mel L1 and the listening terms, 16 crops of
    at most 8 s a step."""
    _train("token2mel", data, run, resume, threads, device, steps=steps, lr=lr, init_from=init_from, oversample=oversample,
           self_reference=self_reference, cycle_weight=cycle_weight, transcript_weight=transcript_weight,
           voice_weight=voice_weight, transcript_from=transcript_from)


@app.command("vocoder-gta")
def vocoder_gta(
    data: Path = _data_argument(), run: Path = _run_argument(), steps: int = _steps_option(), lr: float = _lr_option(),
    max_tokens: int = typer.Option(200, min=1, help="Crop length in tokens (25 a second; crops of a step are of equal length)."),
    init_from: Optional[Path] = _init_from_option(), self_reference: float = _self_reference_option(),
    adversarial_weight: float = typer.Option(0.0, min=0.0, help="Weight of the adversarial term: multi-period and "
                                             "multi-resolution waveform discriminators train beside the vocoder; its "
                                             "least-squares GAN loss plus twice its feature matching, as HiFi-GAN weighs them."),
    resume: bool = _resume_option(), threads: int = _threads_option(), device: str = _device_option(),
) -> None:
    """The vocoder fine-tuned on the frozen token-to-mel model's mels (the run's token2mel, else --init-from's) against
    the real audio of the same tokens; it starts from the run's vocoder, or --init-from's."""
    _train("vocoder-gta", data, run, resume, threads, device, steps=steps, lr=lr, max_tokens=max_tokens, init_from=init_from,
           self_reference=self_reference, adversarial_weight=adversarial_weight)


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder with tokenizer.safetensors and a trained token2mel job."),
    out: Path = typer.Argument(..., help="Codec folder to write (e.g. the speech/ folder of a checkpoint)."),
    vocoder: str = typer.Option("vocoder", help="The run's vocoder or vocoder-gta job, or an exported codec folder whose vocoder to take."),
) -> None:
    """Write the trained codec as float16 safetensors + config.json (loadable by SpeechCodec.load)."""
    from unisono.codec.codebook import TOKENIZER_FILE
    from unisono.codec.codec import CONFIG_FILE
    from unisono.train.codec_jobs import export_codec

    if vocoder not in ("vocoder", "vocoder-gta") and not Path(vocoder, CONFIG_FILE).is_file():
        raise typer.BadParameter(f"{vocoder!r}; choose vocoder, vocoder-gta or a codec folder", param_hint="--vocoder")
    if not (run / "codec.json").is_file() or not (run / TOKENIZER_FILE).is_file():
        raise typer.BadParameter(f"{run} holds no trained codec: it needs codec.json and {TOKENIZER_FILE}", param_hint="RUN")
    try:
        path = export_codec(run, out, _codec_config(run), vocoder=vocoder)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="RUN") from None
    size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
    typer.echo(f"codec written to {path} ({size:.1f} MB)")


@app.command("recogniser-texts")
def recogniser_texts(
    manifest: Path = typer.Argument(..., help="A real-speech manifest (audio paths relative to its folder)."),
    out: Path = typer.Argument(..., help="Manifest to write: the clips heard as their reference, with the recogniser's text."),
    recognizer: str = typer.Option("faster-whisper", help="The recogniser (`unisono eval asr --help`); default: the one "
                                                          "`unisono eval codec` scores with."),
    threads: int = typer.Option(1, help="CPU threads."),
) -> None:
    """The texts of a real-speech manifest as the recogniser writes them, where it hears them right.

    For `token2mel --transcript-from`. Corpora of read speech are transcribed in their own conventions ("RUBOUT G M E F
    THREE NINE"); the transcript loss would then ask the audio for a spelling, not for the words. A clip is kept, with
    the recogniser's own text, when that text equals the reference under the scoring normaliser (Whisper's English
    one: case, punctuation and spelt-out numbers do not count); clips it mishears are left out."""
    from unisono.audio.io import AudioError, load_audio
    from unisono.data.crossval import normalizer
    from unisono.data.manifest import ManifestError, read_manifest
    from unisono.peers.recognizers import SpecError, build_recognizer

    try:
        utterances = read_manifest(manifest)
    except (OSError, ManifestError) as e:
        raise typer.BadParameter(f"{manifest}: {e}", param_hint="MANIFEST") from None
    try:
        reader = build_recognizer(recognizer, threads=threads)
    except SpecError as e:
        raise typer.BadParameter(str(e), param_hint="--recognizer") from None
    root = manifest.parent
    norms = {language: normalizer(language) for language in {u.language for u in utterances}}
    kept, differ, unreadable = [], 0, 0
    with _progress("reading clips") as bar:
        task = bar.add_task("read", total=len(utterances))
        for u in utterances:
            bar.advance(task)
            try:
                heard = reader.transcribe(load_audio(root / u.audio), u.language)
            except (AudioError, OSError):
                unreadable += 1
                continue
            norm = norms[u.language]
            if heard.strip() and norm(heard) == norm(u.text):
                kept.append(u.to_dict() | {"audio": str((root / u.audio).resolve()), "text": heard})
                differ += heard != u.text
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    typer.echo(f"{out}: {len(kept)} of {len(utterances)} clips heard as their reference ({differ} of them written "
               f"otherwise than the reference)" + (f"; {unreadable} unreadable" if unreadable else ""))
