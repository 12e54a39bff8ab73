"""Tables and plots of evaluation results: printed with rich, written as markdown + PNG (matplotlib).

Tables are plain data (`Table`) rendered two ways, so the console and the report always agree.
Plots use matplotlib's object API (`Figure`), never pyplot's global state.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from unisono.eval.asr import RESULTS_FILE, RunResult, reference_rtf
from unisono.eval.mtp import MTPResult

NOT_SUPPORTED = "n/s"  # a set in a language the system has no model for

SCORING_NOTES = {
    "en": "`en` (WER): Whisper's English normaliser on both sides (lower case, punctuation removed, "
          "contractions expanded, number words as digits, British spellings as American).",
    "an4": "`an4` (CER): AN4 is spelled letters and digit strings, so words mean little: the English "
           "normaliser, then number words as digits and everything but a-z/0-9 removed, on both sides; "
           "\"G M E F THREE NINE\" and \"GMEF39\" are the same string. A lone O reads as zero on both sides.",
    "zh": "`zh` (CER): NFKC, traditional to simplified (OpenCC t2s), punctuation, symbols and spaces removed; "
          "no inverse text normalisation.",
}


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""
    text_columns: int = 1  # the first columns hold names (left-aligned); the rest numbers

    def markdown(self) -> str:
        right = [i >= self.text_columns for i in range(len(self.columns))]
        head = "| " + " | ".join(self.columns) + " |"
        rule = "| " + " | ".join("---:" if r else "---" for r in right) + " |"
        body = ["| " + " | ".join(row) + " |" for row in self.rows]
        out = [f"### {self.title}", "", head, rule, *body]
        if self.note:
            out += ["", self.note]
        return "\n".join(out) + "\n"

    def rich(self):
        from rich.table import Table as RichTable

        t = RichTable(title=self.title, caption=self.note or None)
        for i, c in enumerate(self.columns):
            t.add_column(c, justify="right" if i >= self.text_columns else "left")
        for row in self.rows:
            t.add_row(*row)
        return t


def _pct(x: float) -> str:
    return "—" if x is None or math.isnan(x) else ("inf" if math.isinf(x) else f"{100 * x:.1f}")


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _sets(results: Sequence[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.set_name for r in results))


def _systems(results: Sequence[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.system for r in results))


def summary_table(results: Sequence[RunResult], reference: str) -> Table:
    t = Table("Summary", ["set", "system", "metric", "error %", "RTF", "RTF × ref"], note=(
        f"RTF × ref: real-time factor divided by that of the reference, {reference}, on the same clips in "
        f"the same run (below 1: faster). {NOT_SUPPORTED}: the system has no model for the set's language."
    ), text_columns=3)
    for s in _sets(results):
        ref = reference_rtf(results, s, reference)
        for r in (r for r in results if r.set_name == s):
            if not r.supported:
                t.rows.append([s, r.system, r.metric, NOT_SUPPORTED, NOT_SUPPORTED, NOT_SUPPORTED])
            else:
                t.rows.append([s, r.system, r.metric, _pct(r.rate), _num(r.rtf, 4), _num(r.rtf / ref if ref else None, 2)])
    return t


def set_table(results: Sequence[RunResult], set_name: str, reference: str) -> Table:
    rs = [r for r in results if r.set_name == set_name]
    first = rs[0]
    metric = first.metric
    unit = "words" if first.unit == "word" else "chars"
    note = (f"{first.clips} utterances, {first.audio_seconds / 60:.1f} min of audio, scored with the `{first.scoring}` convention "
            f"({metric}); S/D/I/N in {unit}. RTF: median of {first.repeats} timed passes after {first.warmup} warm-up clip(s).")
    times = sorted(r.measured_at for r in rs if r.measured_at)
    if times:
        note += f" Timed {times[0]}" + (f" to {times[-1]}" if times[-1] != times[0] else "") + " (end of each system's passes, UTC)."
    if first.unreadable:
        note += f" {len(first.unreadable)} file(s) could not be read and are left out: {', '.join(sorted(first.unreadable))}."
    with_stats = any(r.decode_stats for r in rs)
    cols = ["system", f"{metric} %", "Δ ref (95%)", "S", "D", "I", "N", "failed", "RTF", "× ref", "threads"] + (["tokens/pass"] if with_stats else [])
    note += (f" Δ ref: {metric} minus the reference's ({reference}) on the utterances both scored, in points, with the 95% "
             "interval of a paired bootstrap over those utterances: the spread the choice of clips alone gives it.")
    t = Table(f"{set_name}", cols, note=note)
    ref = reference_rtf(results, set_name, reference)
    ref_run = next((r for r in rs if r.system == reference and r.supported), None)
    for r in rs:
        if not r.supported:
            t.rows.append([r.system, NOT_SUPPORTED] + [""] * (len(cols) - 2))
            continue
        c = r.counts
        row = [
            r.system, _pct(r.rate), _difference(ref_run, r), str(c.substitutions), str(c.deletions), str(c.insertions),
            str(c.reference_length),
            str(r.failures), _num(r.rtf, 4), _num(r.rtf / ref if ref else None, 2), str(r.threads) if r.threads else "—",
        ]
        if with_stats:
            st = r.stats()
            row.append(_num(st.tokens_per_pass, 2) if st else "—")
        t.rows.append(row)
    return t


def _difference(reference: RunResult | None, run: RunResult) -> str:
    """The run's error rate minus the reference's on the utterances both scored, with its 95% interval."""
    from unisono.eval.metrics import difference_interval, format_difference, total

    if reference is None or reference is run:
        return "—"
    theirs = {u.id: u.counts for u in reference.utterances}
    pairs = [(theirs[u.id], u.counts) for u in run.utterances if u.id in theirs]
    if not pairs:
        return "—"
    base, new = [b for b, _ in pairs], [n for _, n in pairs]
    return format_difference(total(new).rate - total(base).rate, difference_interval(base, new))


def acceptance_table(results: Sequence[RunResult]) -> Table | None:
    """Per (system, set) where the system reports MTP statistics."""
    rows = [(r, r.stats()) for r in results if r.supported and r.decode_stats]
    rows = [(r, s) for r, s in rows if s.n_branches > 0]
    if not rows:
        return None
    k = max(s.n_branches for _, s in rows)
    t = Table("MTP acceptance", ["system", "set", "tokens", "passes", "tokens/pass", "mean accepted"] + [f"pos {i}" for i in range(1, k + 1)],
              note="pos i: P(draft i accepted | drafts before it accepted). tokens/pass counts the bonus token and the prefill pass.",
              text_columns=2)
    for r, s in rows:
        acc = [_num(a, 3) for a in s.acceptance_rate] + [""] * (k - s.n_branches)
        t.rows.append([r.system, r.set_name, str(s.tokens), str(s.passes), _num(s.tokens_per_pass, 2), _num(s.mean_accepted, 2), *acc])
    return t


def mtp_table(results: Sequence[MTPResult], title: str = "MTP vs greedy decoding") -> Table:
    k = max(r.n_drafts for r in results)
    t = Table(title, ["drafts K", "identical", "greedy passes", "MTP passes", "tokens/pass", "pass reduction",
                      "greedy s", "MTP s", "speed-up"] + [f"pos {i}" for i in range(1, k + 1)],
              note="speed-up: greedy decode time / MTP decode time, medians over repeats, encoding excluded. "
                   "identical: MTP tokens equal greedy tokens on every clip.")
    for r in results:
        acc = [_num(a, 3) for a in r.decode_stats.acceptance_rate] + [""] * (k - r.n_drafts)
        t.rows.append([str(r.n_drafts), "yes" if r.identical else "NO", str(r.greedy_passes), str(r.mtp_passes),
                       _num(r.tokens_per_pass, 2), _num(r.pass_reduction, 2), _num(r.greedy_seconds, 3),
                       _num(r.mtp_seconds, 3), _num(r.speedup, 2), *acc])
    return t


def accepted_length_table(stats_by_label: dict[str, "object"]) -> Table:
    k = max(s.n_branches for s in stats_by_label.values())
    t = Table("Accepted length per verification pass", ["run"] + [str(i) for i in range(k + 1)],
              note="Share of verification passes that accepted 0..K drafts, in percent.")
    for label, s in stats_by_label.items():
        n = sum(s.accepted_hist) or 1
        t.rows.append([label] + [_pct(c / n) for c in s.accepted_hist] + [""] * (k - s.n_branches))
    return t


# ---- plots ----------------------------------------------------------------------------------
def _figure(width: float = 7.0, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float | None]], ylabel: str) -> None:
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        vals = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
        bars = ax.bar(xs, vals, width, label=label)
        for b, v in zip(bars, values):
            text = NOT_SUPPORTED if v is None else f"{v:.3g}"
            ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def plot_error_rates(results: Sequence[RunResult], path: Path) -> Path:
    sets = _sets(results)
    by = {(r.set_name, r.system): r for r in results}
    series = {name: [100 * by[(s, name)].rate if (s, name) in by and by[(s, name)].supported else None for s in sets]
              for name in _systems(results)}
    labels = [f"{s}\n({next(r.metric for r in results if r.set_name == s)})" for s in sets]
    fig, ax = _figure()
    _grouped_bars(ax, labels, series, "error rate, %")
    ax.set_title("Error rate per set (WER or CER)")
    fig.savefig(path, dpi=110)
    return path


def plot_rtf(results: Sequence[RunResult], path: Path) -> Path:
    sets = _sets(results)
    by = {(r.set_name, r.system): r for r in results}
    series = {name: [by[(s, name)].rtf if (s, name) in by and by[(s, name)].supported else None for s in sets]
              for name in _systems(results)}
    fig, ax = _figure()
    _grouped_bars(ax, sets, series, "real-time factor (lower is faster)")
    ax.set_title("Real-time factor per set (median of repeats)")
    fig.savefig(path, dpi=110)
    return path


def plot_acceptance(curves: dict[str, list[float]], path: Path) -> Path:
    fig, ax = _figure(6.0, 3.4)
    for label, rates in curves.items():
        ax.plot(range(1, len(rates) + 1), rates, marker="o", label=label)
    ax.set_xlabel("draft position")
    ax.set_ylabel("acceptance rate")
    ax.set_ylim(0, 1.02)
    ax.set_title("MTP acceptance by draft position")
    if curves:
        ax.set_xticks(range(1, max(len(r) for r in curves.values()) + 1))
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return path


def plot_accepted_length(hists: dict[str, list[int]], path: Path) -> Path:
    fig, ax = _figure(6.0, 3.4)
    k = max((len(h) for h in hists.values()), default=1)
    groups = [str(i) for i in range(k)]
    series = {label: [100 * c / (sum(h) or 1) for c in h] + [0.0] * (k - len(h)) for label, h in hists.items()}
    _grouped_bars(ax, groups, series, "% of verification passes")
    ax.set_xlabel("drafts accepted in a pass")
    ax.set_title("Accepted length per verification pass")
    fig.savefig(path, dpi=110)
    return path


def plot_speedup(results: Sequence[MTPResult], path: Path) -> Path:
    fig, ax = _figure(6.0, 3.4)
    ks = [r.n_drafts for r in results]
    ax.plot(ks, [r.speedup for r in results], marker="o", label="decode speed-up (time)")
    ax.plot(ks, [r.pass_reduction for r in results], marker="s", label="greedy passes / MTP passes")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("drafts K")
    ax.set_ylabel("× greedy")
    ax.set_xticks(ks)
    ax.set_title("MTP speed-up vs greedy")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return path


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---- reports --------------------------------------------------------------------------------
def asr_tables(results: Sequence[RunResult], reference: str) -> list[Table]:
    tables = [summary_table(results, reference)] + [set_table(results, s, reference) for s in _sets(results)]
    if (acc := acceptance_table(results)) is not None:
        tables.append(acc)
    return tables


def write_asr_report(results: Sequence[RunResult], directory: Path, reference: str, command: str, header: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tables = asr_tables(results, reference)
    plots = [plot_error_rates(results, directory / "error_rates.png"), plot_rtf(results, directory / "rtf.png")]
    mtp_runs = {f"{r.system} / {r.set_name}": r.stats() for r in results if r.supported and r.decode_stats}
    mtp_runs = {k: s for k, s in mtp_runs.items() if s.n_branches > 0}
    if mtp_runs:
        plots.append(plot_acceptance({k: s.acceptance_rate for k, s in mtp_runs.items()}, directory / "mtp_acceptance.png"))
        plots.append(plot_accepted_length({k: s.accepted_hist for k, s in mtp_runs.items()}, directory / "mtp_accepted_length.png"))
        tables.append(accepted_length_table(mtp_runs))
    lines = ["# ASR evaluation", "", header.strip(), "", "Reproduce with:", "", "```", command, "```", ""]
    used = dict.fromkeys(r.scoring for r in results)
    lines += ["Scoring:", ""] + [f"- {SCORING_NOTES[k]}" for k in used if k in SCORING_NOTES]
    if any(not r.supported for r in results):
        lines += [f"- {NOT_SUPPORTED}: not supported. The system has no model for the set's language "
                  "(English-only models on Mandarin), so it is not run there (`--run-unsupported` runs it anyway)."]
    lines += [""] + [t.markdown() for t in tables]
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    failures = [(r, u) for r in results for u in r.utterances if u.error]
    if failures:
        lines += ["", "## Failed clips", ""] + [f"- {r.system} / {r.set_name} / {u.id}: {u.error}" for r, u in failures[:50]]
    lines += ["", f"Per-utterance hypotheses, normalised texts and counts: `{RESULTS_FILE}`.", ""]
    path = directory / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path



def write_mtp_report(results: Sequence[MTPResult], directory: Path, model: str, command: str, header: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tables = [mtp_table(results), accepted_length_table({f"K={r.n_drafts}": r.decode_stats for r in results})]
    plots = [
        plot_acceptance({f"K={r.n_drafts}": r.decode_stats.acceptance_rate for r in results}, directory / "mtp_acceptance.png"),
        plot_accepted_length({f"K={r.n_drafts}": r.decode_stats.accepted_hist for r in results}, directory / "mtp_accepted_length.png"),
        plot_speedup(results, directory / "mtp_speedup.png"),
    ]
    (directory / "mtp.json").write_text(json.dumps([r.to_dict() for r in results], indent=2), encoding="utf-8")
    lines = [f"# MTP analysis: {model}", "", header.strip(), "", "Reproduce with:", "", "```", command, "```", ""]
    lines += [t.markdown() for t in tables]
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    path = directory / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
