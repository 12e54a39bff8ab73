"""The real-audio pipeline: recordings in, graded utterances with cross-validated transcripts out.

    recording ─► load (16 kHz mono; corrupt/empty/silent/huge -> rejected with the reason)
              ─► silero-vad speech regions ─► no speech -> rejected
              ─► merged and re-cut into complete utterances <= 30 s (cut in pauses)
              ─► per utterance: quality (SNR, clipping, bandwidth), speaker count, synthetic voice
              ─► transcripts from every recogniser that knows the language
              ─► short form: two transcripts cross-validated (WER, CER, speech rate) -> tier
                 long form:  three transcripts fused by ROVER; disagreement > 0.05 -> discarded;
                             fused text refined (ITN, punctuation, terminology across segments)
              ─► audio/<id>.flac + one manifest line per kept utterance, one rejected line per loss

A recording takes the long-form path when it is longer than one utterance window (30 s) or
when `long_form=True`.

Outputs in `out_dir`:

    results.jsonl    one line per finished recording: its utterances and rejections. It is the
                     run's journal: a killed run resumes after the last whole line, and a
                     recording is either in it whole or redone whole (never half, never twice).
    manifest.jsonl   the kept utterances (rewritten from the journal at the end of a run)
    rejected.jsonl   what was dropped, by whom and why (stage + reason)
    summary.json     clips and hours per tier and language, rejections per stage, agreement

Three runners share `process_recording`: in-process (`workers=1`), a local process pool, and
Ray Data (one actor per worker, on a local or remote Ray cluster). A failure on one recording
is a rejection; nothing a single file does stops the run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from unisono.audio.io import AUDIO_EXTENSIONS
from unisono.audio.vad import Span, VADConfig
from unisono.data.annotate import AnnotateConfig
from unisono.data.crossval import UNVERIFIED, TierConfig
from unisono.data.manifest import MANIFEST_NAME, REJECTED_NAME, Rejection, Utterance
from unisono.data.rover import RoverConfig

SAMPLE_RATE = 16000
RESULTS_NAME = "results.jsonl"
SUMMARY_NAME = "summary.json"


@dataclass
class Recording:
    """One input file, and what its source manifest says about it (if it came from one)."""

    id: str
    path: str  # absolute
    language: str
    reference: str | None = None  # a transcript that came with the file (kept for evaluation only)
    speaker: str | None = None
    source: str | None = None


@dataclass
class ProcessConfig:
    # recogniser specs (unisono.peers.recognizers); short form: the first is primary
    asr: tuple[str, ...] = ("faster-whisper", "pocketsphinx")
    # the third for ROVER: only two independent English recognisers ship offline, so it is Whisper again
    # with beam search; name a unisono checkpoint or a server instead when one is at hand
    long_form_asr: tuple[str, ...] = ("faster-whisper", "pocketsphinx", "faster-whisper:beam5")
    long_form: bool | None = None  # None: decided per recording by its duration
    refiner: str = "rules"
    vad: VADConfig = field(default_factory=VADConfig)
    min_segment_s: float = 0.5  # shorter speech is a click or a breath, not an utterance
    max_file_s: float = 4 * 3600.0  # longer recordings are refused before decoding
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    tiers: TierConfig = field(default_factory=TierConfig)
    rover: RoverConfig = field(default_factory=RoverConfig)
    detect_synthetic: bool = True
    audio_format: str = "flac"
    threads_per_worker: int = 1


# --- one recording --------------------------------------------------------------------------

@dataclass
class RecordingResult:
    recording: str
    utterances: list[Utterance]
    rejections: list[Rejection]
    seconds: float = 0.0  # audio duration processed
    # one record per transcribed segment, kept or not: its agreement figures and outcome, so a
    # run's statistics cover everything the recognisers saw, not only what survived
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"recording": self.recording, "seconds": round(self.seconds, 3),
                "utterances": [u.to_dict() for u in self.utterances],
                "rejections": [r.to_dict() for r in self.rejections], "checks": self.checks}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecordingResult:
        return cls(d["recording"], [Utterance.from_dict(u) for u in d["utterances"]],
                   [Rejection.from_dict(r) for r in d["rejections"]], float(d.get("seconds", 0.0)),
                   list(d.get("checks", [])))


class Processor:
    """Holds the recognisers and the refiner of one worker; `__call__` processes one recording.

    Models load on first use, in the process that uses them, so a Processor can be shipped to
    a pool worker or a Ray actor before anything heavy exists.
    """

    def __init__(self, config: ProcessConfig, out_dir: str | Path):
        self.config = config
        self.out_dir = Path(out_dir)
        self._backends: dict[str, Any] = {}
        self._refiner = None
        self._synthetic = None

    def backend(self, spec: str):
        if spec not in self._backends:
            from unisono.peers.recognizers import build_recognizer

            self._backends[spec] = build_recognizer(spec, threads=self.config.threads_per_worker)
        return self._backends[spec]

    @property
    def refiner(self):
        if self._refiner is None:
            from unisono.data.refine import build_refiner

            self._refiner = build_refiner(self.config.refiner)
        return self._refiner

    def synthetic_detector(self):
        if self._synthetic is None:
            from unisono.data.synthetic import SyntheticVoiceDetector

            self._synthetic = SyntheticVoiceDetector.bundled()
        return self._synthetic

    def __call__(self, rec: Recording) -> RecordingResult:
        self._stage = "load"
        try:
            return self._process(rec)
        except Exception as e:  # any failure on one recording is that recording's rejection
            return RecordingResult(rec.id, [], [Rejection(rec.id, self._stage, f"{type(e).__name__}: {e}", rec.path)])

    # the stages, in order
    def _process(self, rec: Recording) -> RecordingResult:
        from unisono.audio.io import AudioError, load_audio
        from unisono.audio.vad import merge_regions, speech_regions
        from unisono.data.annotate import annotate, noise_power

        cfg = self.config
        reject = lambda stage, reason, seg=None: Rejection(seg or rec.id, stage, reason, rec.path)  # noqa: E731
        try:
            audio = load_audio(rec.path, SAMPLE_RATE, max_duration_s=cfg.max_file_s, allow_silent=False)
        except (AudioError, OSError) as e:
            return RecordingResult(rec.id, [], [reject("load", f"{type(e).__name__}: {e}")])
        duration = len(audio) / SAMPLE_RATE
        self._stage = "vad"
        try:
            regions = speech_regions(audio, SAMPLE_RATE, cfg.vad)
        except Exception as e:
            return RecordingResult(rec.id, [], [reject("vad", f"{type(e).__name__}: {e}")], duration)
        segments = [Span(round(max(0.0, s.start), 3), round(min(duration, s.end), 3))
                    for s in merge_regions(regions, cfg.vad.max_segment_s, cfg.vad.max_merge_gap_s)]
        if not segments:
            return RecordingResult(rec.id, [], [reject("vad", "no speech found (silero-vad)")], duration)
        self._stage = "asr"
        noise = noise_power(audio, regions, SAMPLE_RATE, cfg.annotate)
        long_form = cfg.long_form if cfg.long_form is not None else duration > cfg.vad.max_segment_s
        specs = cfg.long_form_asr if long_form else cfg.asr
        backends = [self.backend(s) for s in specs]
        capable = [b for b in backends if b.supports(rec.language)]

        drafts: list[dict[str, Any]] = []
        rejections: list[Rejection] = []
        for k, seg in enumerate(segments):
            seg_id = f"{rec.id}_{k:03d}"
            if seg.duration < cfg.min_segment_s:
                rejections.append(reject("segment", f"{seg.duration:.2f} s of speech < {cfg.min_segment_s} s", seg_id))
                continue
            clip = audio[int(seg.start * SAMPLE_RATE): int(seg.end * SAMPLE_RATE)]
            inner = [Span(max(r.start, seg.start) - seg.start, min(r.end, seg.end) - seg.start)
                     for r in regions if r.end > seg.start and r.start < seg.end]
            stage = "annotate"
            try:
                ann = annotate(clip, SAMPLE_RATE, spans=inner, noise=noise, config=cfg.annotate)
                synthetic = self.synthetic_detector().score(clip, SAMPLE_RATE) if cfg.detect_synthetic else None
                stage = "asr"
                texts = {b.name: b.transcribe(clip, rec.language) for b in capable}
            except Exception as e:  # one bad segment costs that segment only
                rejections.append(reject(stage, f"{type(e).__name__}: {e}", seg_id))
                continue
            drafts.append({"id": seg_id, "span": seg, "clip": clip, "ann": ann, "texts": texts,
                           "speech_s": sum(s.duration for s in inner), "synthetic": synthetic})

        self._stage = "rover" if long_form else "crossval"
        checks: list[dict[str, Any]] = []
        utterances = (self._long_form(rec, drafts, capable, rejections, checks) if long_form
                      else self._short_form(rec, drafts, capable, rejections, checks))
        if rec.reference and len(segments) == 1 and checks and capable:
            # a reference transcript covers the whole recording: comparable when it is one segment
            from unisono.data.crossval import normalizer, word_error_rate

            norm = normalizer(rec.language)
            primary = drafts[0]["texts"][capable[0].name] if drafts else ""
            checks[0]["reference_wer"] = round(word_error_rate(norm(rec.reference), norm(primary)), 4)
        return RecordingResult(rec.id, utterances, rejections, duration, checks)

    def _utterance(self, rec: Recording, d: dict[str, Any], text: str, meta: dict[str, Any]) -> Utterance:
        seg: Span = d["span"]
        ann = d["ann"]
        meta = {
            "quality": round(ann.quality, 4),
            "scores": ann.scores(),
            "speakers": ann.speakers,
            "asr": d["texts"],
            "segment": {"recording": rec.id, "file": rec.path, "start": seg.start, "end": seg.end},
            **meta,
        }
        if d["synthetic"] is not None:
            meta["synthetic_score"] = round(d["synthetic"], 4)
            meta["synthetic"] = bool(d["synthetic"] >= 0.5)
        if rec.reference is not None:
            meta["reference"] = rec.reference  # evaluation only: the whole recording's transcript
        u = Utterance(
            id=d["id"], audio=f"audio/{d['id']}.{self.config.audio_format}", text=text, language=rec.language,
            duration=round(seg.duration, 3), speaker=rec.speaker,
            source=f"{rec.source or rec.path}#{seg.start:.3f}-{seg.end:.3f}", meta=meta,
        )
        self._write_audio(u, d["clip"])
        return u

    def _short_form(self, rec, drafts, capable, rejections, checks) -> list[Utterance]:
        from unisono.data.crossval import agreement, assign_tier, rejection_reason

        cfg = self.config
        out = []
        for d in drafts:
            names = [b.name for b in capable]
            agree = None
            if len(names) >= 2:
                agree = agreement(d["texts"][names[0]], d["texts"][names[1]], rec.language, d["speech_s"],
                                  (names[0], names[1]), cfg.tiers)
            tier = assign_tier(agree, d["ann"].quality, d["ann"].speakers, cfg.tiers)
            if agree is not None:
                checks.append({"id": d["id"], "language": rec.language, "tier": tier, **agree.to_dict()})
            if tier is None:
                rejections.append(Rejection(d["id"], "crossval", rejection_reason(agree, cfg.tiers), rec.path))
                continue
            text = d["texts"][names[0]] if names else ""
            meta = {"tier": tier, "agreement": agree.to_dict() if agree else None}
            if tier == UNVERIFIED:
                meta["unverified_reason"] = (f"{len(names)} recogniser(s) for {rec.language!r} "
                                             f"among {', '.join(b for b in cfg.asr)}; cross-validation needs 2")
            out.append(self._utterance(rec, d, text, meta))
        return out

    def _long_form(self, rec, drafts, capable, rejections, checks) -> list[Utterance]:
        from unisono.data.crossval import normalizer
        from unisono.data.rover import normalize_tokens, rover

        cfg = self.config
        names = [b.name for b in capable]
        kept = []
        for d in drafts:
            if len(names) < 3:
                rejections.append(Rejection(d["id"], "rover", f"ROVER needs 3 recognisers for {rec.language!r}, "
                                            f"{len(names)} can transcribe it", rec.path))
                continue
            hyps = [normalize_tokens(d["texts"][n], rec.language, normalizer(rec.language), cfg.rover) for n in names]
            fused = rover(hyps)
            kept_here = fused.disagreement <= cfg.rover.max_disagreement
            checks.append({"id": d["id"], "language": rec.language, "tier": "rover" if kept_here else None,
                           "disagreement": round(fused.disagreement, 4), "slots": len(fused.slots)})
            if not kept_here:
                rejections.append(Rejection(d["id"], "rover", f"disagreement {fused.disagreement:.3f} > "
                                            f"{cfg.rover.max_disagreement} over {len(fused.slots)} slots", rec.path))
                continue
            sep = "" if rec.language in cfg.rover.char_level_languages else " "
            kept.append((d, fused.joined(sep), fused))
        refined = self.refiner.refine([t for _, t, _ in kept], rec.language, [list(d["texts"].values()) for d, _, _ in kept])
        return [
            self._utterance(rec, d, text, {
                "tier": "rover", "fused": fused_text,
                "rover": {"disagreement": round(f.disagreement, 4), "slots": len(f.slots), "systems": names},
                "refiner": self.refiner.name,
            })
            for (d, fused_text, f), text in zip(kept, refined)
        ]

    def _write_audio(self, u: Utterance, clip: np.ndarray) -> None:
        from unisono.audio.io import save_audio

        path = self.out_dir / u.audio
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".part" + path.suffix)
        save_audio(tmp, clip, SAMPLE_RATE)
        os.replace(tmp, path)  # a killed worker leaves a .part file, never a truncated clip


# --- inputs ---------------------------------------------------------------------------------

def collect_recordings(inputs: Sequence[str | Path], language: str = "en") -> list[Recording]:
    """Recordings from files, folders of audio, manifest.jsonl files, or folders holding manifests.

    Manifest entries keep their language, speaker, source and transcript (as a reference);
    bare audio files take `language`. Ids are unique: prefixed by the set's folder name.
    """
    from unisono.data.manifest import iter_manifest

    recs: list[Recording] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_file() and p.name.endswith(".jsonl"):
            manifests = [p]
        elif p.is_dir():
            manifests = [p / MANIFEST_NAME] if (p / MANIFEST_NAME).exists() else sorted(p.rglob(MANIFEST_NAME))
        elif p.is_file():
            recs.append(Recording(p.stem, str(p.resolve()), language))
            continue
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
        if manifests:
            for m in manifests:
                for u in iter_manifest(m, skip_partial_tail=True):
                    recs.append(Recording(f"{m.parent.name}/{u.id}", str((m.parent / u.audio).resolve()),
                                          u.language, u.text or None, u.speaker, u.source))
        else:
            for f in sorted(x for x in p.rglob("*") if x.suffix.lower() in AUDIO_EXTENSIONS or x.suffix == ""):
                if f.is_file():
                    rel = f.relative_to(p).with_suffix("")
                    recs.append(Recording(f"{p.name}/{rel.as_posix()}", str(f.resolve()), language))
    seen: set[str] = set()
    dupes = [r.id for r in recs if r.id in seen or seen.add(r.id)]
    if dupes:
        raise ValueError(f"recording ids are not unique: {dupes[:5]}; give each set its own folder")
    return recs


# --- the journal ----------------------------------------------------------------------------

def read_results(out_dir: str | Path) -> list[RecordingResult]:
    """Finished recordings of a run (a torn last line, from a kill, is ignored)."""
    from unisono.data.manifest import _iter_lines

    path = Path(out_dir) / RESULTS_NAME
    if not path.exists():
        return []
    return [RecordingResult.from_dict(d) for _, d in _iter_lines(path, skip_partial_tail=True)]


def write_outputs(out_dir: str | Path) -> dict[str, Any]:
    """manifest.jsonl, rejected.jsonl and summary.json, from the journal."""
    from unisono.data.manifest import ManifestWriter, write_manifest

    out_dir = Path(out_dir)
    results = read_results(out_dir)
    write_manifest(out_dir / MANIFEST_NAME, (u for r in results for u in r.utterances))
    tmp = out_dir / (REJECTED_NAME + ".tmp")
    tmp.unlink(missing_ok=True)
    with ManifestWriter(tmp) as w:
        for r in results:
            for rej in r.rejections:
                w.write(rej)
    os.replace(tmp, out_dir / REJECTED_NAME)
    summary = summarize(results)
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def summarize(results: Sequence[RecordingResult]) -> dict[str, Any]:
    """Counts and agreement statistics of a run, for the report and the CLI."""
    from collections import Counter, defaultdict

    from unisono.data.crossval import normalizer, word_error_rate

    utts = [u for r in results for u in r.utterances]
    rejs = [j for r in results for j in r.rejections]
    tiers: dict[str, dict[str, Any]] = defaultdict(lambda: {"clips": 0, "hours": 0.0})
    for u in utts:
        key = f"{u.language}/{u.meta.get('tier')}"
        tiers[key]["clips"] += 1
        tiers[key]["hours"] += u.duration / 3600
    checks = [c for r in results for c in r.checks]
    agree = [c for c in checks if "wer" in c]  # every cross-validated segment, kept or rejected
    rover_d = [c["disagreement"] for c in checks if "disagreement" in c]
    # Where the inputs came with transcripts, how good is the kept text, per tier? Only
    # recordings kept as one segment can be compared (a reference cannot be split by time).
    per_rec = Counter(u.meta.get("segment", {}).get("recording") for u in utts)
    ref_wer: dict[str, list[float]] = defaultdict(list)
    for u in utts:
        ref = u.meta.get("reference")
        if ref and per_rec[u.meta["segment"]["recording"]] == 1 and u.text:
            norm = normalizer(u.language)
            ref_wer[u.meta.get("tier")].append(word_error_rate(norm(ref), norm(u.text)))
    stages = Counter(j.stage for j in rejs)
    return {
        "recordings": len(results),
        "audio_hours_in": round(sum(r.seconds for r in results) / 3600, 4),
        "utterances": len(utts),
        "hours_kept": round(sum(u.duration for u in utts) / 3600, 4),
        "tiers": {k: {"clips": v["clips"], "hours": round(v["hours"], 4)} for k, v in sorted(tiers.items())},
        "rejected": {"total": len(rejs), "by_stage": dict(stages)},
        "agreement": {
            "clips": len(agree),
            "mean_wer": round(float(np.mean([a["wer"] for a in agree])), 4) if agree else None,
            "median_wer": round(float(np.median([a["wer"] for a in agree])), 4) if agree else None,
            "mean_cer": round(float(np.mean([a["cer"] for a in agree])), 4) if agree else None,
            "share_wer_le_0.05": round(float(np.mean([a["wer"] <= 0.05 for a in agree])), 4) if agree else None,
            "kept": sum(a["tier"] is not None for a in agree),
        },
        "rover": {
            "segments": len(rover_d),
            "kept": sum(c["tier"] is not None for c in checks if "disagreement" in c),
            "median_disagreement": round(float(np.median(rover_d)), 4) if rover_d else None,
        },
        # the primary recogniser's WER against the inputs' own transcripts, kept vs rejected:
        # what cross-validation filters out, measured (one-segment recordings with a reference)
        "primary_reference_wer": {
            outcome: {"clips": len(v), "mean": round(float(np.mean(v)), 4) if v else None}
            for outcome, v in (
                ("kept", [c["reference_wer"] for c in checks if "reference_wer" in c and c["tier"] is not None]),
                ("rejected", [c["reference_wer"] for c in checks if "reference_wer" in c and c["tier"] is None]),
            )
        },
        "reference_wer_by_tier": {t: {"clips": len(v), "mean": round(float(np.mean(v)), 4)} for t, v in sorted(ref_wer.items())},
        "synthetic_flagged": sum(1 for u in utts if u.meta.get("synthetic")),
    }


# --- runners --------------------------------------------------------------------------------

def _pool_init(config: ProcessConfig, out_dir: str) -> None:
    # One Processor per pool worker process, built once: its models stay loaded across files.
    global _WORKER_PROCESSOR
    _WORKER_PROCESSOR = Processor(config, out_dir)


def _pool_task(rec: Recording) -> dict[str, Any]:
    return _WORKER_PROCESSOR(rec).to_dict()


_WORKER_PROCESSOR: Processor | None = None  # set only inside pool workers, by _pool_init


def _run_local(recs: Sequence[Recording], config: ProcessConfig, out_dir: Path, workers: int) -> Iterator[dict]:
    if workers <= 1:
        proc = Processor(config, out_dir)
        for rec in recs:
            yield proc(rec).to_dict()
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: torch and onnxruntime do not survive fork with their thread pools started
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_pool_init,
                             initargs=(config, str(out_dir))) as pool:
        futures = {pool.submit(_pool_task, r): r for r in recs}
        for fut in as_completed(futures):
            rec = futures[fut]
            try:
                yield fut.result()
            except Exception as e:  # a worker that died (e.g. a crash in a native decoder)
                yield RecordingResult(rec.id, [], [Rejection(rec.id, "worker", f"{type(e).__name__}: {e}", rec.path)]).to_dict()


class _RayProcessor:
    """Ray Data actor: a Processor per actor, records in, one JSON result line per record out."""

    def __init__(self, config: ProcessConfig, out_dir: str):
        self.processor = Processor(config, out_dir)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = len(batch["id"])
        recs = [Recording(**{k: (None if _is_null(batch[k][i]) else str(batch[k][i])) for k in batch}) for i in range(n)]
        return {"result": [json.dumps(self.processor(r).to_dict(), ensure_ascii=False) for r in recs]}


def _is_null(v: Any) -> bool:
    # Ray's numpy batches turn a missing string into NaN (of any float width)
    return v is None or (isinstance(v, (float, np.floating)) and bool(np.isnan(v)))


def _run_ray(recs: Sequence[Recording], config: ProcessConfig, out_dir: Path, workers: int,
             address: str | None) -> Iterator[dict]:
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    if not recs:
        return
    ds = ray.data.from_items([asdict(r) for r in recs], override_num_blocks=max(1, min(len(recs), workers * 4)))
    out = ds.map_batches(_RayProcessor, fn_constructor_kwargs={"config": config, "out_dir": str(out_dir)},
                         batch_size=1, concurrency=max(1, workers), num_cpus=1, batch_format="numpy")
    for row in out.iter_rows():
        yield json.loads(row["result"])


def run(
    inputs: Sequence[Recording],
    out_dir: str | Path,
    config: ProcessConfig | None = None,
    *,
    workers: int = 1,
    runner: str = "local",  # "local" (process pool / in-process) or "ray"
    ray_address: str | None = None,
    progress: Callable[[RecordingResult], None] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Process `inputs` into `out_dir`, resuming a previous run there; returns the summary.

    `limit` stops after that many recordings this call (for tests of resumption).
    """
    from unisono.data.manifest import ManifestWriter

    from unisono.peers.recognizers import check_spec

    config = config or ProcessConfig()
    for spec in (*config.asr, *config.long_form_asr):
        check_spec(spec)  # a typo should stop the run here, not reject every recording
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = {r.recording for r in read_results(out_dir)}
    todo = [r for r in inputs if r.id not in done]
    if limit is not None:
        todo = todo[:limit]
    if runner == "ray":
        stream = _run_ray(todo, config, out_dir, workers, ray_address)
    elif runner == "local":
        stream = _run_local(todo, config, out_dir, workers)
    else:
        raise ValueError(f"runner must be 'local' or 'ray', got {runner!r}")
    with ManifestWriter(out_dir / RESULTS_NAME) as journal:
        for d in stream:
            journal.write(d)  # one whole line per recording: the unit of resumption
            if progress:
                progress(RecordingResult.from_dict(d))
    return write_outputs(out_dir)


__all__ = ["ProcessConfig", "Processor", "Recording", "RecordingResult", "collect_recordings", "read_results",
           "run", "summarize", "write_outputs"]
