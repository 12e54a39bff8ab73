"""`unisono codec ...`: build, train, export and try the speech codec (tokenizer + detokenizer).

    unisono codec prepare corpus/codec_data                 # audio + encoder features, held-out set
    unisono codec fit-tokenizer corpus/codec_data runs/codec  # k-means codebook
    unisono codec train vocoder runs/codec                  # mel -> waveform
    unisono codec train token2mel runs/codec                # tokens + voice -> mel
    unisono codec export runs/codec src/unisono/assets/unisono-tiny/speech
    unisono codec resynth in.wav out.wav
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Speech tokens: prepare data, fit the tokenizer, train the detokenizer, export, resynthesise.",
                  no_args_is_help=True)

SYNTH = Path("corpus/synth/manifest.jsonl")


def _real_train_dir() -> Path:
    """data/real_speech_train of the shared folder: $UNISONO_SHARED, or ../shared beside the checkout."""
    import os

    for base in (os.environ.get("UNISONO_SHARED"), Path.cwd().parent / "shared", Path.cwd() / "shared"):
        if base and (Path(base) / "data/real_speech_train").is_dir():
            return Path(base) / "data/real_speech_train"
    return Path("../shared/data/real_speech_train")


REAL_TRAIN = _real_train_dir()


def _progress(description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


@app.command()
def prepare(
    out: Path = typer.Argument(..., help="Folder to write (a rerun resumes it)."),
    synth: list[Path] = typer.Option([SYNTH], help="Synthetic corpus manifest(s); clean clips are used (repeat for several)."),
    real: list[Path] = typer.Option(
        [REAL_TRAIN / "an4_train/manifest.jsonl", REAL_TRAIN / "speechocean762_train/manifest.jsonl"],
        help="Real-speech training manifests (never the evaluation sets).",
    ),
    english: int = typer.Option(3000, help="Synthetic English clips, per synthetic manifest."),
    mandarin: int = typer.Option(600, help="Synthetic Mandarin clips, per synthetic manifest."),
    test_source: Optional[Path] = typer.Option(None, help="Manifest the held-out English set is drawn from (default: the first --synth)."),
    test_clips: int = typer.Option(45, help="Held-out synthetic English clips (texts kept out of training)."),
    exclude_texts: list[Path] = typer.Option([], help="Evaluation manifest whose texts are kept out of training (repeat for several)."),
    layers: str = typer.Option("3,4", help="Encoder layers whose features are stored (comma-separated)."),
    frame_difference: float = typer.Option(
        0.0, min=0.0, help="Store each token's feature as (mean of its 2 encoder frames, W x their difference) (W > 0; "
                           "twice as wide), for a codebook that sees the movement within a token; 0: the mean alone."),
    threads: int = typer.Option(2, help="CPU threads."),
) -> None:
    """Store audio and frozen-encoder features of the training clips, and a held-out English set."""
    import torch

    from unisono.train.codec_data import PrepareConfig, SourceSpec, prepare as run

    for m in [*synth, *real, *exclude_texts, *([test_source] if test_source else [])]:
        if not m.is_file():
            raise typer.BadParameter(f"{m} does not exist")
    torch.set_num_threads(threads)
    sources = [SourceSpec(str(m), n, (lang,)) for m in synth for n, lang in ((english, "en"), (mandarin, "zh"))]
    sources += [SourceSpec(str(m), None, (), clean_only=False, per_engine=False) for m in real]
    config = PrepareConfig(sources=sources, layers=tuple(int(x) for x in layers.split(",")),
                           test_source=str(test_source or synth[0]), test_clips=test_clips,
                           exclude_texts=[str(m) for m in exclude_texts], frame_difference=frame_difference)
    with _progress("encoding clips") as bar:
        task = bar.add_task("encode", total=None)
        data = run(config, out, progress=lambda done, total: bar.update(task, completed=done, total=total))
    typer.echo(f"{len(data)} clips, {sum(c['samples'] for c in data.clips) / 16000 / 3600:.2f} h, "
               f"{data.total_tokens} tokens in {out}; held-out set in {out / 'test-en'}")


def _codec_config(run: Path, layer: int | None = None, codebook: int | None = None, frame_difference: float | None = None):
    """The run's CodecConfig (run/codec.json), created from the defaults and the options on first use."""

    from unisono.codec.config import CodecConfig

    path = run / "codec.json"
    if path.is_file():
        config = CodecConfig.from_dict(json.loads(path.read_text()))
        t = config.tokenizer
        if (layer and layer != t.layer) or (codebook and codebook != t.codebook_size) or \
                (frame_difference is not None and frame_difference != t.frame_difference):
            raise typer.BadParameter(f"{run} was set up with layer {t.layer}, codebook {t.codebook_size}, frame difference "
                                     f"{t.frame_difference}; use another run folder")
        return config
    config = CodecConfig()
    if layer:
        config.tokenizer.layer = layer
    if codebook:
        config.tokenizer.codebook_size = codebook
    if frame_difference is not None:
        config.tokenizer.frame_difference = frame_difference
    run.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(), indent=2))
    return config


@app.command("fit-tokenizer")
def fit_tokenizer(
    data: Path = typer.Argument(..., help="Folder written by `unisono codec prepare`."),
    run: Path = typer.Argument(..., help="Run folder (codec.json, tokenizer.safetensors, tokens.npy)."),
    layer: int = typer.Option(3, help="Encoder layer to quantise (4 is the output of Whisper tiny's encoder; 3 resynthesises better)."),
    codebook: int = typer.Option(1024, help="Codebook size."),
    frames: int = typer.Option(300_000, help="Frames k-means is fitted on (a seeded sample)."),
    inits: int = typer.Option(3, min=1, help="k-means runs from different starts; the best is kept."),
    iterations: int = typer.Option(100, min=1, help="k-means passes over the sample, at most."),
    codebook_of: Optional[Path] = typer.Option(
        None, help="Reuse the codebook of this run (its tokenizer.safetensors) or of an exported codec folder (e.g. the "
                   "shipped model's speech/, whose settings the run then takes) instead of fitting one: new data, same token ids."),
    oversample: list[str] = typer.Option(
        [], metavar="MANIFEST=WEIGHT",
        help="Weigh the frames of this source manifest's clips WEIGHT times the others' in k-means; repeatable. E.g. the "
             "real speech among synthetic, so that its share of the codebook follows its share of training draws."),
    threads: int = typer.Option(2, help="CPU threads."),
) -> None:
    """Fit the k-means codebook and tokenize every prepared clip."""
    import torch

    from unisono.train.codec_data import CodecData
    from unisono.train.codec_train import check_codebook_fits, fit_tokenizer as fit, read_codebook, tokenize_data

    torch.set_num_threads(threads)
    pairs = _oversample_pairs(oversample)
    if codebook_of is None:
        prepared = CodecData(data, layer=layer)
        try:
            weights = prepared.draw_weights(pairs) if pairs else None
        except ValueError as e:  # a manifest with none of the clips
            raise typer.BadParameter(str(e), param_hint="--oversample") from None
        config = _codec_config(run, layer, codebook, prepared.frame_difference)  # tokens pool as the stored features do
        fit(prepared, run, config.tokenizer.codebook_size, max_frames=frames, inits=inits, iterations=iterations,
            clip_weights=weights)
        return
    if pairs:
        raise typer.BadParameter("it weighs the frames of a codebook being fitted: not with --codebook-of", param_hint="--oversample")
    try:
        book = read_codebook(codebook_of)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="--codebook-of") from None
    prepared = CodecData(data, layer=book.layer)
    try:
        check_codebook_fits(prepared, book.centroids, book.frame_difference)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--codebook-of") from None
    if book.settings is not None and not (run / "codec.json").is_file():  # an exported codec: its settings become the run's
        run.mkdir(parents=True, exist_ok=True)
        (run / "codec.json").write_text(json.dumps(book.settings.to_dict(), indent=2))
    _codec_config(run, book.layer, len(book.centroids), prepared.frame_difference)
    tokenize_data(prepared, run, book.centroids, bias=book.bias)


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


@app.command("train-tokenizer")
def train_tokenizer(
    data: Path = typer.Argument(..., help="Folder written by `unisono codec prepare`."),
    run: Path = typer.Argument(..., help="Run folder (codec.json, codebook.pt, tokenizer.safetensors, tokens.npy)."),
    layer: int = typer.Option(3, help="Encoder layer to quantise."),
    codebook: int = typer.Option(1024, help="Codebook size."),
    steps: int = typer.Option(1000, help="Total optimiser steps."),
    until: Optional[int] = typer.Option(None, help="Stop at this step (the schedule still ends at --steps); the "
                                                   "codebook and tokens of the step it stops at are written."),
    batch: int = typer.Option(16, help="Clips per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate."),
    max_tokens: int = typer.Option(200, help="Longest clip drawn, in tokens (25 per second)."),
    code_dim: int = typer.Option(16, min=2, help="Dimensions of the space the codes live in."),
    threads: int = typer.Option(2, help="CPU threads."),
) -> None:
    """Train a codebook the tokenizer's own Whisper model can read the words back from (supervised semantic
    tokens; fit-tokenizer's k-means is the unsupervised alternative), then tokenize every prepared clip.
    Fine-tune a detokenizer onto it with `unisono codec train token2mel ... --init-from CODEC`."""
    import torch
    from rich.console import Console

    from unisono.train.codec_codebook import CodebookConfig, CodebookJob
    from unisono.train.codec_data import CodecData
    from unisono.train.codec_train import TrainConfig

    torch.set_num_threads(threads)
    try:
        if CodecData(data).frame_difference:  # Whisper's decoder reads the codebook's features as encoder frames
            raise ValueError(f"{data} stores [mean, difference] features (prepare --frame-difference); a trained codebook "
                             "reads mean features: prepare another folder without the option")
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    config = _codec_config(run, layer, codebook)
    cfg = TrainConfig(steps=steps, lr=lr, batch=batch, max_tokens=max_tokens, warmup=min(50, steps), weight_decay=0.0,
                      threads=threads)
    err = Console(stderr=True)
    try:
        job = CodebookJob(CodecData(data, layer=config.tokenizer.layer), run, config, cfg, CodebookConfig(code_dim=code_dim),
                          log=lambda s: err.print(s, highlight=False))
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    job.train(until=until)
    err.print(f"codebook: step {job.step} saved in {job.ckpt}; its tokenizer.safetensors and tokens.npy in {run}")


@app.command()
def train(
    part: str = typer.Argument(..., help="vocoder, token2mel, refiner (after token2mel), or vocoder-gta (last)."),
    data: Path = typer.Argument(..., help="Folder written by `unisono codec prepare`."),
    run: Path = typer.Argument(..., help="Run folder; training resumes from its checkpoint."),
    steps: int = typer.Option(4000, help="Total optimiser steps."),
    batch: int = typer.Option(16, help="Segments (vocoder) or clips (token2mel) per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate."),
    until: Optional[int] = typer.Option(None, help="Stop at this step (the schedule still ends at --steps)."),
    max_tokens: int = typer.Option(200, help="token2mel / refiner: longest crop of a clip, in tokens (25 per second)."),
    init_from: Optional[Path] = typer.Option(
        None, help="Fine-tune: a new run starts from the weights of this checkpoint of the same job (e.g. "
                   "runs/old/token2mel.pt) or of an exported codec folder (e.g. the shipped model's speech/), "
                   "with a fresh schedule and optimiser."),
    oversample: list[str] = typer.Option(
        [], metavar="MANIFEST=WEIGHT",
        help="Draw the clips of this source manifest WEIGHT times as often as the others (token2mel, refiner, "
             "vocoder-gta); repeatable. E.g. the real speech among synthetic."),
    cycle_weight: float = typer.Option(
        0.0, help="token2mel, vocoder-gta: weight of the re-encoding loss (the predicted mel, voiced by the run's vocoder "
                  "and heard by the tokenizer's encoder, should give the real audio's frames at the token layer; token2mel "
                  "trains through a frozen vocoder, vocoder-gta trains the vocoder); 0 is off."),
    cycle_vocoder: Optional[Path] = typer.Option(
        None, help="token2mel: the vocoder of the re-encoding loss, a checkpoint or an exported codec folder (default: the "
                   "run's vocoder-gta.pt, else vocoder.pt, else that of the --init-from codec folder)."),
    cycle_clips: int = typer.Option(4, help="token2mel, vocoder-gta: crops of each batch that take the re-encoding loss."),
    cycle_tokens: int = typer.Option(100, help="token2mel, vocoder-gta: tokens of each such crop (from its start)."),
    cycle_layer: list[int] = typer.Option(
        [], help="token2mel, vocoder-gta: an encoder layer the re-encoding loss listens at (repeatable: the distances "
                 "are averaged); default: the token layer."),
    self_reference: float = typer.Option(
        0.0, min=0.0, max=1.0,
        help="token2mel, refiner, vocoder-gta: share of crops whose voice reference is a span of their own clip instead "
             "of another clip of the same speaker (synthetic voices speak each clip at its own pitch)."),
    transcript_weight: float = typer.Option(
        0.0, min=0.0, help="token2mel, vocoder-gta: weight of the transcript loss (whole clips are resynthesised and read by "
                           "the tokenizer's Whisper model, its decoder fed their text; token2mel trains through the frozen "
                           "vocoder as for --cycle-weight, vocoder-gta trains the vocoder on the frozen token-to-mel model's "
                           "mels); 0 is off. That model is also the recogniser `unisono eval codec` scores with: judge such "
                           "a codec with an independent one too (bench/codec_variants.py --recognizer pocketsphinx)."),
    transcript_clips: int = typer.Option(4, min=1, help="token2mel, vocoder-gta: whole clips a step for the transcript loss."),
    transcript_tokens: Optional[int] = typer.Option(
        None, min=1, help="token2mel, vocoder-gta: longest clip the transcript loss reads, in tokens (default: --max-tokens; "
                          "vocoder-gta's crops are short, its transcript clips need not be)."),
    transcript_window: bool = typer.Option(
        False, help="token2mel, vocoder-gta: the transcript loss reads each clip in Whisper's padded 30 s window, as a "
                    "Whisper recogniser does, instead of alone as the tokenizer does (about six times the encoder's cost)."),
    transcript_from: list[Path] = typer.Option(
        [], metavar="MANIFEST",
        help="token2mel, vocoder-gta: the transcript loss reads only the clips of this source manifest, with the "
             "manifest's texts (repeatable, the first manifest's text of a clip wins; default: every clip with its "
             "stored text). Leave out corpora transcribed in capitals with spelt-out numbers (\"RUBOUT G M E F THREE "
             "NINE\"): Whisper does not write them so, and the loss would ask the audio for the spelling; or give them "
             "as the recogniser writes them (bench/codec_recogniser_texts.py)."),
    voice_weight: float = typer.Option(
        0.0, min=0.0, help="token2mel, with --transcript-weight: weight of an L1 between the long-term spectrum (the "
                           "log-mel averaged over time) of each transcript clip's resynthesis and the clip's own: "
                           "it keeps the voice's timbre while the transcript loss reshapes the frames."),
    envelope_weight: float = typer.Option(
        0.0, min=0.0, help="token2mel: weight of an L1 between the spectral envelopes (the first --envelope-cepstra "
                           "cepstra of each frame) of the predicted and the real mel, beside the mel L1; 0 is off."),
    envelope_cepstra: int = typer.Option(12, min=1, help="token2mel: cepstra that make a frame's envelope (of 80 mel bins)."),
    adversarial_weight: float = typer.Option(
        0.0, min=0.0, help="token2mel, vocoder, vocoder-gta: weight of the adversarial term (a discriminator trains "
                           "beside the model: of mel patches for token2mel, multi-period and multi-resolution ones of "
                           "the audio for the vocoder; the model's least-squares GAN loss plus twice its feature "
                           "matching, as HiFi-GAN weighs them); 0 is off."),
    depth: Optional[int] = typer.Option(
        None, min=1, help="token2mel: blocks of the token-to-mel model, written to the run's codec.json. Deeper than the "
                          "--init-from model: the blocks it lacks are appended as identities, so the fine-tune starts "
                          "from the same function."),
    post_depth: Optional[int] = typer.Option(
        None, min=1, help="token2mel: convolutions of the token-to-mel model's post-net (at the mel rate), as --depth."),
    phase_projection: bool = typer.Option(
        False, "--phase-projection", help="token2mel: give each of a token's mel frames its own projection of the token's "
                                         "vector instead of repeating one, written to the run's codec.json. From an "
                                         "--init-from model without it, every frame starts with that model's projection: "
                                         "the same function."),
    threads: int = typer.Option(1, help="CPU threads."),
    device: str = typer.Option(
        "cpu", help="Where the models train: cpu, cuda or cuda:N (clips are read and cut on the CPU either way; an "
                    "exact resume after a kill is promised on the CPU only)."),
) -> None:
    """Train the vocoder (mel -> audio), the token-to-mel model (tokens + voice -> mel), or the
    flow-matching mel refiner on top of a trained token-to-mel model (it is added to the run's
    codec.json the first time it is trained), or fine-tune the vocoder on the detokenizer's own
    mels (vocoder-gta: export it with `--vocoder vocoder-gta`)."""
    import numpy as np
    import torch
    from rich.console import Console

    from unisono.train.codec_data import CodecData
    from unisono.train.codec_train import TOKENS_FILE, RefinerJob, Token2MelJob, TrainConfig, VocoderGtaJob, VocoderJob

    jobs = {"token2mel": Token2MelJob, "refiner": RefinerJob, "vocoder-gta": VocoderGtaJob}
    if part != "vocoder" and part not in jobs:
        raise typer.BadParameter(f"{part!r}; choose vocoder, token2mel, refiner or vocoder-gta", param_hint="PART")
    if part != "vocoder" and not (run / TOKENS_FILE).is_file():  # checked before a default codec.json is written there
        raise typer.BadParameter(f"{run / TOKENS_FILE} is missing: run `unisono codec fit-tokenizer` first")
    torch.set_num_threads(threads)
    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise typer.BadParameter(str(e), param_hint="--device") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter(f"{device}: this torch sees no CUDA device", param_hint="--device")
    if kind not in ("cpu", "cuda"):
        raise typer.BadParameter(f"{device}: choose cpu, cuda or cuda:N", param_hint="--device")
    config = _codec_config(run)
    pairs = _oversample_pairs(oversample)
    if cycle_weight and part not in ("token2mel", "vocoder-gta"):
        raise typer.BadParameter("the re-encoding loss trains the token-to-mel model or the vocoder-gta fine-tune only",
                                 param_hint="--cycle-weight")
    if self_reference and part == "vocoder":
        raise typer.BadParameter("the vocoder hears no voice reference", param_hint="--self-reference")
    if cycle_layer and not cycle_weight:
        raise typer.BadParameter("the layers are the re-encoding loss's: give --cycle-weight too", param_hint="--cycle-layer")
    if transcript_weight and part not in ("token2mel", "vocoder-gta"):
        raise typer.BadParameter("the transcript loss trains the token-to-mel model or the vocoder-gta fine-tune only",
                                 param_hint="--transcript-weight")
    if (transcript_tokens or transcript_window or transcript_from) and not transcript_weight:
        raise typer.BadParameter("it is the transcript loss's option: give --transcript-weight too",
                                 param_hint="--transcript-tokens / --transcript-window / --transcript-from")
    for manifest in transcript_from:
        if not manifest.is_file():
            raise typer.BadParameter(f"{manifest}: no such manifest", param_hint="--transcript-from")
    if voice_weight and part != "token2mel":
        raise typer.BadParameter("it holds the token-to-mel model's mels: token2mel only", param_hint="--voice-weight")
    if voice_weight and not transcript_weight:
        raise typer.BadParameter("it is taken on the transcript loss's clips: give --transcript-weight too",
                                 param_hint="--voice-weight")
    if envelope_weight and part != "token2mel":
        raise typer.BadParameter("it is a loss on the token-to-mel model's mels: token2mel only", param_hint="--envelope-weight")
    if adversarial_weight and part == "refiner":
        raise typer.BadParameter("the refiner is trained by flow matching alone", param_hint="--adversarial-weight")
    if cycle_vocoder and part != "token2mel":
        raise typer.BadParameter("a frozen vocoder voices the token-to-mel model's mels only; vocoder-gta trains its own",
                                 param_hint="--cycle-vocoder")
    # the checks come first: a refused command leaves the run's codec.json as it was
    shape = {"n_layers": depth, "post_layers": post_depth, "phase_projection": phase_projection or None}
    if any(v is not None and v != getattr(config.token2mel, k) for k, v in shape.items()):
        if part != "token2mel":
            raise typer.BadParameter("the shape is the token-to-mel model's", param_hint="--depth / --post-depth / --phase-projection")
        if Token2MelJob.ckpt_of(run).is_file():
            raise typer.BadParameter(f"{Token2MelJob.ckpt_of(run)} holds a model of {config.token2mel.n_layers} blocks and "
                                     f"{config.token2mel.post_layers} post-net layers"
                                     f"{' with' if config.token2mel.phase_projection else ' without'} a phase projection: "
                                     "a new shape needs a new run folder",
                                     param_hint="--depth / --post-depth / --phase-projection")
        for k, v in shape.items():
            if v is not None:
                setattr(config.token2mel, k, v)
        (run / "codec.json").write_text(json.dumps(config.to_dict(), indent=2))
    if part == "refiner" and config.refiner is None:
        from unisono.codec.config import RefinerConfig

        config.refiner = RefinerConfig()
        (run / "codec.json").write_text(json.dumps(config.to_dict(), indent=2))
    cfg = TrainConfig(steps=steps, batch=batch, lr=lr, max_tokens=max_tokens,
                      init_from=str(init_from) if init_from else None, oversample=tuple(pairs),
                      cycle_weight=cycle_weight, cycle_vocoder=str(cycle_vocoder) if cycle_vocoder else None,
                      cycle_clips=cycle_clips, cycle_tokens=cycle_tokens, cycle_layers=tuple(cycle_layer),
                      self_reference=self_reference, transcript_weight=transcript_weight,
                      transcript_clips=transcript_clips, transcript_tokens=transcript_tokens,
                      transcript_window=transcript_window, transcript_sources=tuple(map(str, transcript_from)),
                      voice_weight=voice_weight,
                      envelope_weight=envelope_weight, envelope_cepstra=envelope_cepstra,
                      adversarial_weight=adversarial_weight, device=device, threads=threads)
    err = Console(stderr=True)
    log = lambda s: err.print(s, highlight=False)  # noqa: E731
    if part == "vocoder":
        job = VocoderJob(CodecData(data), run, config, cfg, log=log)
    else:
        try:
            job = jobs[part](CodecData(data), np.load(run / TOKENS_FILE), run, config, cfg, log=log)
        except FileNotFoundError as e:
            raise typer.BadParameter(str(e), param_hint="RUN") from None
        except ValueError as e:  # an --oversample / --transcript-from manifest with none of the clips, or an --init-from of another job
            raise typer.BadParameter(str(e)) from None
    job.train(until=until)
    err.print(f"{part}: step {job.step} saved in {job.ckpt}")


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder with tokenizer.safetensors, vocoder.pt and token2mel.pt."),
    out: Path = typer.Argument(..., help="Codec folder to write (e.g. the speech/ folder of a checkpoint)."),
    vocoder: str = typer.Option("vocoder", help="Vocoder checkpoint of the run: vocoder (real mels) or vocoder-gta; "
                                                "or an exported codec folder whose vocoder to take."),
    refiner_steps: Optional[int] = typer.Option(None, min=1, help="Euler steps of the refiner at inference (default: the run's)."),
    refiner_temperature: Optional[float] = typer.Option(None, help="Noise scale of the refiner at inference (default: the run's)."),
) -> None:
    """Write the trained codec as float16 safetensors + config.json (loadable by SpeechCodec.load)."""
    from unisono.codec.codec import CONFIG_FILE
    from unisono.train.codec_train import TOKENIZER_FILE, export_codec

    if vocoder not in ("vocoder", "vocoder-gta") and not Path(vocoder, CONFIG_FILE).is_file():
        raise typer.BadParameter(f"{vocoder!r}; choose vocoder, vocoder-gta or a codec folder", param_hint="--vocoder")
    if not (run / "codec.json").is_file() or not (run / TOKENIZER_FILE).is_file():
        raise typer.BadParameter(f"{run} holds no trained codec: it needs codec.json and {TOKENIZER_FILE}", param_hint="RUN")
    config = _codec_config(run)
    if (refiner_steps is not None or refiner_temperature is not None) and config.refiner is None:
        raise typer.BadParameter(f"{run} has no refiner: train one (`unisono codec train refiner`) or drop the refiner options")
    if refiner_steps is not None:
        config.refiner.steps = refiner_steps
    if refiner_temperature is not None:
        config.refiner.temperature = refiner_temperature
    try:
        path = export_codec(run, out, config, vocoder=vocoder)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="RUN") from None
    size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
    typer.echo(f"codec written to {path} ({size:.1f} MB)")


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
