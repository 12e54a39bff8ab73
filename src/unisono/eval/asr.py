"""ASR evaluation: every system on the same sets; accuracy, speed and MTP statistics per set.

    manifests ─► EvalSet ─► load_audio once per set (unreadable files listed, never fatal)
      for each set, for each system:
         language not supported? ─► a "not supported" result (or run it anyway: run_unsupported)
         warm-up, then `repeats` timed passes (speed.timed_runs) ─► hypotheses of the first pass
         normalise reference and hypothesis (normalize.Scoring) ─► S/D/I counts (metrics)
      ─► RunResult per (set, system), appended to results.jsonl as soon as it is done

A killed run resumes: results already in the results file for the same set, system spec,
thread count, repeats, warm-up and limit are read back instead of run again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from unisono.eval.manifest import EvalSet
from unisono.eval.metrics import ErrorCounts, count_errors, total
from unisono.eval.normalize import Scoring
from unisono.eval.speed import SpeedConfig, timed_runs
from unisono.peers.recognizers import Recognizer as System, TranscriptionError

RESULTS_FILE = "results.jsonl"


@dataclass
class UtteranceResult:
    id: str
    duration: float  # seconds
    reference: str  # as in the manifest
    hypothesis: str  # as the system wrote it
    reference_normalized: str
    hypothesis_normalized: str
    counts: ErrorCounts
    seconds: float  # processing time, median over repeats
    error: str | None = None  # the system failed on this clip (scored as an empty hypothesis)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["counts"] = self.counts.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UtteranceResult":
        return cls(**{**d, "counts": ErrorCounts.from_dict(d["counts"])})


@dataclass
class RunResult:
    """One system on one set."""

    set_name: str
    manifest: str
    language: str
    system: str  # display name
    spec: str  # the spec it was built from
    scoring: str  # "en", "zh", "an4"
    unit: str  # "word" or "char"
    threads: int | None
    repeats: int
    warmup: int
    limit: int | None
    supported: bool = True
    utterances: list[UtteranceResult] = field(default_factory=list)
    repeat_seconds: list[float] = field(default_factory=list)
    clips: int = 0  # readable clips in the set (after --limit)
    audio_seconds: float = 0.0
    unreadable: dict[str, str] = field(default_factory=dict)  # utterance id -> why its audio could not be read
    decode_stats: dict | None = None  # DecodeStats.to_dict() summed over the set (unisono only)
    measured_at: str = ""  # UTC time the timed passes ended (ISO 8601); shows which results were timed together

    @property
    def key(self) -> tuple:
        return (self.manifest, self.spec, self.threads, self.repeats, self.warmup, self.limit)

    @property
    def metric(self) -> str:
        return "WER" if self.unit == "word" else "CER"

    @property
    def counts(self) -> ErrorCounts:
        return total([u.counts for u in self.utterances])

    @property
    def rate(self) -> float:
        return self.counts.rate if self.utterances else float("nan")

    @property
    def seconds(self) -> float:
        import statistics

        return statistics.median(self.repeat_seconds) if self.repeat_seconds else float("nan")

    @property
    def rtf(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else float("nan")

    @property
    def failures(self) -> int:
        """Clips that were not scored as the system heard them: the system failed on them (scored
        as an empty hypothesis), or their audio is missing or unreadable (left out of the rate)."""
        return sum(u.error is not None for u in self.utterances) + len(self.unreadable)

    def stats(self):
        from unisono.decode.stats import DecodeStats

        return DecodeStats(**self.decode_stats) if self.decode_stats else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["utterances"] = [u.to_dict() for u in self.utterances]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunResult":
        return cls(**{**d, "utterances": [UtteranceResult.from_dict(u) for u in d["utterances"]]})


def load_results(path: Path) -> list[RunResult]:
    """Results written by earlier (maybe killed) runs; a torn last line is ignored."""
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(RunResult.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, KeyError):
                continue  # the line a killed run was writing
    return out


def append_result(path: Path, result: RunResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        f.flush()


@dataclass
class LoadedSet:
    eval_set: EvalSet
    ids: list[str]
    clips: list[np.ndarray]  # 16 kHz mono float32
    unreadable: dict[str, str]

    @property
    def audio_seconds(self) -> float:
        return sum(len(c) for c in self.clips) / 16000


def load_clips(eval_set: EvalSet) -> LoadedSet:
    from unisono.audio.io import AudioError, load_audio

    ids, clips, bad = [], [], {}
    for u in eval_set.utterances:
        try:
            clips.append(load_audio(u.audio))
            ids.append(u.id)
        except (AudioError, OSError) as e:
            bad[u.id] = f"{type(e).__name__}: {e}"
    return LoadedSet(eval_set, ids, clips, bad)


def evaluate(
    system: System,
    loaded: LoadedSet,
    scoring: Scoring,
    speed: SpeedConfig,
    limit: int | None = None,
    run_unsupported: bool = False,
    progress: Callable[[float], None] | None = None,
) -> RunResult:
    """One system on one set: timed repeats, hypotheses of the first, scored."""
    s = loaded.eval_set
    result = RunResult(
        set_name=s.name, manifest=str(s.manifest), language=s.language, system=system.name, spec=system.spec,
        scoring=scoring.name, unit=scoring.unit, threads=system.threads, repeats=speed.repeats,
        warmup=speed.warmup, limit=limit, unreadable=dict(loaded.unreadable),
        clips=len(loaded.clips), audio_seconds=round(loaded.audio_seconds, 3),
    )
    if not system.supports(s.language) and not run_unsupported:
        result.supported = False
        return result
    refs = {u.id: u for u in s.utterances}

    def run(clip: np.ndarray) -> tuple[str, str | None, object]:
        try:
            return system.transcribe(clip, language=s.language), None, system.decode_stats()
        except TranscriptionError as e:
            return "", str(e), None
        except Exception as e:  # noqa: BLE001 - one clip that breaks a peer must not lose the run
            return "", f"{type(e).__name__}: {e}", None

    outputs, timing = timed_runs(run, loaded.clips, speed, progress)
    stats = None
    for utt_id, clip, (hyp, err, st), secs in zip(loaded.ids, loaded.clips, outputs, timing.clip_seconds):
        ref = refs[utt_id].text
        ref_n, hyp_n = scoring.normalize(ref), scoring.normalize(hyp)
        result.utterances.append(UtteranceResult(
            id=utt_id, duration=round(len(clip) / 16000, 3), reference=ref, hypothesis=hyp,
            reference_normalized=ref_n, hypothesis_normalized=hyp_n,
            counts=count_errors(ref_n, hyp_n, scoring.unit), seconds=round(secs, 5), error=err,
        ))
        if st is not None:
            stats = st if stats is None else stats.merge(st)
    result.repeat_seconds = [round(t, 5) for t in timing.repeat_seconds]
    result.decode_stats = stats.to_dict() if stats is not None else None
    result.measured_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return result


def reference_rtf(results: Iterable[RunResult], set_name: str, reference_system: str) -> float | None:
    for r in results:
        if r.set_name == set_name and r.system == reference_system and r.supported and r.audio_seconds:
            return r.rtf
    return None
