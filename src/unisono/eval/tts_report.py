"""The report of `unisono eval tts`: results.json, a markdown table, spectrograms, the audio itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unisono.eval.metrics import format_difference
from unisono.eval.tts import LANGUAGES, SystemResult, audio_folder, compare


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{100 * rate:.1f}%"


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _fraction(pair: tuple[int, int] | None) -> str:
    return "—" if pair is None else f"{pair[0]}/{pair[1]}"


def short_name(recognizer: str) -> str:
    """"faster-whisper base int8 beam1" -> "base": the column says which model heard."""
    words = recognizer.split()
    return words[1] if words[0] == "faster-whisper" and len(words) > 1 else recognizer


def table_rows(results: list[SystemResult], recognizers: list[str]) -> tuple[list[str], list[list[str]]]:
    """Column names and one row of cells per system (shared by the terminal table and the markdown)."""
    columns = ["system"]
    keys = []
    for rec in recognizers:
        for language in LANGUAGES:
            key = f"{'cer' if language == 'zh' else 'wer'}_{language} {rec}"
            if any(r.summary([rec])[key] is not None for r in results):
                keys.append(key)
                columns.append(f"{'CER zh' if language == 'zh' else 'WER en'} {short_name(rec)}")
    columns += ["similarity", "DNSMOS", "followed", "RTF", "first audio s", "ended", "skipped"]
    rows = []
    for r in results:
        s = r.summary(recognizers)
        rows.append([r.name, *(_percent(s[k]) for k in keys), _number(s["similarity"], 3), _number(s["dnsmos"]),
                     _fraction(s["adherence"]), _number(s["rtf"], 3), _number(s["first_audio_s"], 3),
                     _fraction(s["ended"]), str(s["skipped"])])
    return columns, rows


def differences(results: list[SystemResult], recognizers: list[str]) -> list[str]:
    """Markdown lines: each system against the first, per recogniser and language."""
    lines = []
    base = results[0]
    for other in results[1:]:
        for rec in recognizers:
            for language in LANGUAGES:
                c = compare(base, other, rec, language)
                if c is None:
                    continue
                line = (f"- {other.name} − {base.name}, {language} ({rec}, {c['prompts']} prompts): error rate "
                        f"{format_difference(c['error_rate'], c['error_rate_ci'])} points")
                if "dnsmos" in c:
                    low, high = c["dnsmos_ci"]
                    line += f"; DNSMOS {c['dnsmos']:+.2f}" + ("" if np.isnan(low) else f" ({low:+.2f} to {high:+.2f})")
                lines.append(line)
    return lines


def plot_spectrograms(results: list[SystemResult], audio_dir: Path, prompt_ids: list[str], path: Path) -> Path | None:
    """Log-mel spectrograms: a row per system, a column per prompt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from unisono.audio.features import log_mel
    from unisono.audio.io import load_audio

    cells = [[audio_dir / audio_folder(r.name) / f"{pid}.wav" for pid in prompt_ids] for r in results]
    if not any(p.is_file() for row in cells for p in row):
        return None
    fig, axes = plt.subplots(len(results), len(prompt_ids), figsize=(4.5 * len(prompt_ids), 1.8 * len(results)),
                             squeeze=False, sharex="col")
    for i, (r, row) in enumerate(zip(results, cells)):
        for j, (pid, wav) in enumerate(zip(prompt_ids, row)):
            ax = axes[i][j]
            if wav.is_file():
                mel = log_mel(torch.from_numpy(load_audio(wav, 16000))).numpy()
                ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(0, mel.shape[1] / 100, 0, mel.shape[0]))
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(r.name, fontsize=8)
            if i == 0:
                ax.set_title(pid, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(results: list[SystemResult], recognizers: list[str], directory: Path, command: str,
                 prompts_file: str, audio_dir: Path | None, spectrogram_prompts: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps({
        "command": command, "prompts": prompts_file, "recognizers": recognizers,
        "systems": [{**r.summary(recognizers), "items": r.items, "skipped_prompts": r.skipped} for r in results],
    }, indent=2, ensure_ascii=False))
    columns, rows = table_rows(results, recognizers)
    lines = ["# TTS evaluation", "", f"`{command}`", "", f"Prompts: {prompts_file}. Recognisers: {', '.join(recognizers)}.",
             "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Similarity: GE2E cosine to the prompt's reference voice (prompts that name one). DNSMOS: P.835 "
              "overall. Instructions followed: instructed clips whose rate or F0 moved the asked way against the "
              "same system's clip of the same text. First audio: call to first audio chunk (unisono streams; the "
              "peers give the whole clip). Ended: sentences the model ended itself rather than at its length guard."]
    diff = differences(results, recognizers)
    if diff:
        lines += ["", f"## Against {results[0].name} (paired bootstrap, 95 %)", "", *diff]
    skipped = [(r.name, s) for r in results for s in r.skipped]
    if skipped:
        reasons: dict[tuple[str, str], int] = {}
        for name, s in skipped:
            reasons[(name, s["reason"])] = reasons.get((name, s["reason"]), 0) + 1
        lines += ["", "## Skipped", ""] + [f"- {name}: {reason} ({n})" for (name, reason), n in reasons.items()]
    if audio_dir is not None:
        png = plot_spectrograms(results, audio_dir, spectrogram_prompts, directory / "spectrograms.png")
        if png is not None:
            lines += ["", "![log-mel spectrograms](spectrograms.png)"]
        lines += ["", f"Audio: `{audio_dir.relative_to(directory) if audio_dir.is_relative_to(directory) else audio_dir}`."]
    (directory / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory / "README.md"
