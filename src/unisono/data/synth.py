"""`unisono data synth`: a bilingual synthetic speech corpus from real text and offline voices.

    sentences (text.py) ──plan──> jobs ──workers──> FLAC + manifest line (or a rejection)

**Plan.** Sentences of each language are shuffled once with the corpus seed. Job k of a
language reads sentence k mod N; its rendition r = k div N (a sentence is read again, by
another voice, only when the hours asked for exceed one reading of every sentence). The voice
(engine first, by weight, then a voice of that engine), speaking rate, pitch and augmentation
of a job come from an RNG seeded by (corpus seed, sentence id, rendition): the job stream is a
pure function of the seed and the sentences, and so is every clip.

**Resume.** The manifest is the record of what is done: a clip's FLAC is written to a
temporary name and renamed, then its manifest line is appended and flushed. A restarted build
reads manifest.jsonl and rejected.jsonl (cutting a torn last line), skips those job ids and
goes on along the same stream. A kill can lose only the clips in flight, which the restart
redoes: no duplicates, nothing lost.

**Voices.** espeak-ng, flite and festival by default; the neural voices Piper and Kokoro
(`neural_voices.py`) when asked for and installed. Each clip's manifest line records the
engine, the voice, every control used (`meta.synth`) and what was measured on the clean
speech (`meta.measured`: seconds of speech, median F0).

**Scale.** Jobs run on a local process pool (default: every core) or, given a Ray address,
as Ray Data `map` tasks over a cluster (the output folder must then be shared storage).
Either way only this process writes the manifest; a job that fails for any reason returns a
rejection with its reason instead of raising.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from unisono.audio.level import trim_silence
from unisono.data.augment import AugmentConfig, augment, load_rir_bank, make_rir_bank, save_rir_bank
from unisono.data.engines import ALL_ENGINES, ENGINES, Voice, available_voices, engine_problems, render, sample_params
from unisono.data.manifest import (
    MANIFEST_NAME,
    REJECTED_NAME,
    ManifestWriter,
    Rejection,
    iter_manifest,
    read_rejections,
    write_parquet,
)
from unisono.data.synthetic import pitch_track
from unisono.data.text import Sentence, TextConfig, collect_sentences, dedup_key, read_sentences, write_sentences

SAMPLE_RATE = 16000
SENTENCES_NAME = "sentences.jsonl"
RIRS_NAME = "rirs.npz"
RUNS_NAME = "runs.jsonl"


@dataclass
class SynthConfig:
    out_dir: Path = Path("corpus/synth")
    # Audio hours to reach per language; the build stops when every language has its hours.
    hours: dict[str, float] = field(default_factory=lambda: {"en": 30.0, "zh": 25.0})
    # Instead of hours: an exact number of jobs per language (reproducible small builds, tests).
    max_clips: dict[str, int] | None = None
    seed: int = 0
    workers: int = os.cpu_count() or 1
    ray_address: str | None = None  # "local" starts a Ray instance here; "auto" or host:port joins one
    ray_batch: int = 256  # jobs per Ray Data dataset: the stop rule is checked between batches
    # English has up to five engines; espeak-ng has ~800 voice variants, flite 5, festival 3,
    # piper 1 and kokoro 5, so picking the engine first keeps the few natural-sounding voices
    # well represented. Weights are relative among the engines used.
    engine_weights: dict[str, float] = field(default_factory=lambda: {
        "espeak-ng": 0.5, "flite": 0.3, "festival": 0.2, "piper": 0.5, "kokoro": 0.5})
    engines: tuple[str, ...] = ENGINES  # ALL_ENGINES adds the neural voices (optional packages)
    min_duration_s: float = 0.5
    min_speech_s: float = 0.3  # speech left after trimming silence, before padding
    max_duration_s: float = 30.0  # the short-form limit of the encoder window
    # Silence kept before and after the speech (random per clip): utterances do not start on a
    # sample boundary in real recordings.
    pad_s: tuple[float, float] = (0.05, 0.4)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.max_clips is None and not any(h > 0 for h in self.hours.values()):
            raise ValueError(f"nothing to build: hours {self.hours} has no positive target and no max_clips")
        bad = [e for e in self.engines if e not in ALL_ENGINES]
        if bad:
            raise ValueError(f"unknown engine(s) {bad}; choose from {', '.join(ALL_ENGINES)}")
        unknown = [e for e in self.engine_weights if e not in ALL_ENGINES]
        if unknown:
            raise ValueError(f"engine weight for unknown engine(s) {unknown}; choose from {', '.join(ALL_ENGINES)}")
        negative = {e: w for e, w in self.engine_weights.items() if not w >= 0}
        if negative:
            raise ValueError(f"engine weights must be >= 0: {negative}")

    @property
    def languages(self) -> tuple[str, ...]:
        targets = self.max_clips if self.max_clips is not None else self.hours
        return tuple(lang for lang, v in targets.items() if v > 0)


@dataclass
class SynthReport:
    clips: dict[str, int]  # per language, in the manifest
    hours: dict[str, float]
    rejected: int
    new_clips: int  # made by this run
    new_audio_s: float
    wall_s: float  # synthesis time of this run (text collection excluded)

    @property
    def clips_per_s(self) -> float:
        return self.new_clips / self.wall_s if self.wall_s else 0.0

    @property
    def audio_hours_per_wall_hour(self) -> float:
        return self.new_audio_s / self.wall_s if self.wall_s else 0.0


# --- planning --------------------------------------------------------------------------------

def job_rng(seed: int, sentence_id: str, rendition: int, stream: int) -> np.random.Generator:
    """The RNG of one job; `stream` separates voice choice (0) from signal processing (1)."""
    return np.random.default_rng([seed, int(sentence_id, 16) % 2**63, rendition, stream])


def choose_voice(voices: dict[str, list[Voice]], weights: dict[str, float], rng: np.random.Generator) -> Voice:
    engines = [e for e in voices if voices[e]]
    w = np.array([weights.get(e, 0.0) for e in engines], dtype=float)
    if w.sum() <= 0:
        w = np.ones(len(engines))
    engine = engines[int(rng.choice(len(engines), p=w / w.sum()))]
    return voices[engine][int(rng.integers(len(voices[engine])))]


def job_stream(sentences: list[Sentence], voices: dict[str, list[Voice]], cfg: SynthConfig) -> Iterator[dict]:
    """Jobs of one language, in their fixed order (endless: renditions repeat the sentences)."""
    if not sentences:
        return
    order = np.random.default_rng([cfg.seed, len(sentences)]).permutation(len(sentences))
    rendition = 0
    while True:
        for i in order:
            s = sentences[i]
            rng = job_rng(cfg.seed, s.id, rendition, 0)
            voice = choose_voice(voices, cfg.engine_weights, rng)
            yield {
                "id": f"{s.language}-{s.id}-{rendition}",
                "sentence": s.to_dict(),
                "voice": asdict(voice),
                "params": sample_params(voice, rng),
                "rendition": rendition,
                "seed": cfg.seed,
            }
        rendition += 1


# --- one job (runs in a worker) --------------------------------------------------------------

@lru_cache(maxsize=4)
def _rir_bank(path: str):
    return load_rir_bank(Path(path)) if Path(path).exists() else None


def render_job(job: dict, out_dir: str, cfg: dict) -> dict:
    """Synthesise, augment and write one clip. Returns {"utterance": ...} or {"rejection": ...}.

    Never raises: whatever goes wrong becomes a rejection with its reason, so one bad job
    cannot stop a run.
    """
    import soundfile as sf

    sentence, voice = job["sentence"], Voice(**job["voice"])
    try:
        audio = trim_silence(render(voice, sentence["text"], job["params"], SAMPLE_RATE))
        if len(audio) == 0:
            raise ValueError("the engine produced only silence")
        # No voice reads faster than ~33 characters a second: less speech than that means the
        # engine skipped (part of) the text, and the transcript would not match the audio.
        speech_s, chars = len(audio) / SAMPLE_RATE, len(dedup_key(sentence["text"]))
        if speech_s < max(cfg["min_speech_s"], chars / 33):
            raise ValueError(f"the engine produced only {speech_s:.2f} s of speech for {chars} characters")
        # Measured on the clean speech, so that instructions (speaking rate, pitch) can be built
        # from what the clip sounds like rather than from the controls alone.
        f0 = pitch_track(audio, SAMPLE_RATE)
        measured = {"speech_s": round(speech_s, 3),
                    "f0_median_hz": round(float(np.median(f0[f0 > 0])), 1) if (f0 > 0).any() else None}
        rng = job_rng(job["seed"], sentence["id"], job["rendition"], 1)
        audio = audio / (np.abs(audio).max() + 1e-9) * 0.9
        pad = rng.uniform(*cfg["pad_s"], size=2)
        audio = np.concatenate([np.zeros(int(pad[0] * SAMPLE_RATE), np.float32), audio,
                                np.zeros(int(pad[1] * SAMPLE_RATE), np.float32)]).astype(np.float32)
        aug = augment(audio, rng, AugmentConfig(**cfg["augment"]), _rir_bank(str(Path(out_dir) / RIRS_NAME)))
        duration = len(aug.audio) / SAMPLE_RATE
        if not cfg["min_duration_s"] <= duration <= cfg["max_duration_s"]:
            raise ValueError(f"duration {duration:.2f} s outside [{cfg['min_duration_s']}, {cfg['max_duration_s']}] s")
        if not np.isfinite(aug.audio).all():
            raise ValueError("non-finite samples after augmentation")
        rel = Path("audio") / sentence["language"] / sentence["id"][:2] / f"{job['id']}.flac"
        path = Path(out_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.flac")
        sf.write(tmp, aug.audio, SAMPLE_RATE, subtype="PCM_16")
        os.replace(tmp, path)
        scores = {"snr_db": aug.snr_db}
        return {"utterance": {
            "id": job["id"], "audio": str(rel), "text": sentence["text"], "language": sentence["language"],
            "duration": round(duration, 4), "speaker": voice.id, "source": sentence["source"],
            "meta": {"engine": voice.engine, "voice": voice.name, "synth": job["params"], "measured": measured,
                     "augment": aug.steps, "text_raw": sentence["text_raw"], "rendition": job["rendition"],
                     "synthetic": True, "tier": "synthetic", "scores": scores},
        }}
    except Exception as e:  # noqa: BLE001 - any failure of one job is recorded, never fatal
        reason = f"{type(e).__name__}: {e}" if str(e) else traceback.format_exc(limit=2)
        return {"rejection": Rejection(job["id"], "synth", reason, sentence.get("text")).to_dict()}


def _render_row(row: dict, out_dir: str, cfg: dict) -> dict:
    """Ray Data row adapter: the job travels as JSON so every row has one simple schema."""
    return {"result": json.dumps(render_job(json.loads(row["job"]), out_dir, cfg), ensure_ascii=False)}


# --- the build -------------------------------------------------------------------------------

def prepare_sentences(cfg: SynthConfig, progress: Callable[[str, int], None] | None = None) -> list[Sentence]:
    """The corpus's sentence list: read if the corpus has one (a resume), else collected once."""
    path = cfg.out_dir / SENTENCES_NAME
    if path.exists():
        return read_sentences(path)
    sentences = collect_sentences(cfg.text, progress)
    write_sentences(path, sentences)
    return sentences


def prepare_rirs(cfg: SynthConfig) -> None:
    path = cfg.out_dir / RIRS_NAME
    if not path.exists() and cfg.augment.p_reverb > 0:
        save_rir_bank(path, *make_rir_bank(cfg.augment.rir_bank_size, cfg.seed))


def worker_settings(cfg: SynthConfig) -> dict:
    """What `render_job` needs of the config (a plain dict, sent to worker processes)."""
    return {"pad_s": cfg.pad_s, "min_speech_s": cfg.min_speech_s, "min_duration_s": cfg.min_duration_s, "max_duration_s": cfg.max_duration_s,
            "augment": asdict(cfg.augment)}


class _Progress:
    """What is done, per language; decides which language gets the next job."""

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self.hours: dict[str, float] = defaultdict(float)
        self.clips: dict[str, int] = defaultdict(int)
        self.attempted: dict[str, int] = defaultdict(int)  # clips + rejections + in flight
        self.rejected = 0

    def add_utterance(self, u: dict) -> None:
        self.hours[u["language"]] += u["duration"] / 3600
        self.clips[u["language"]] += 1

    def needs(self, language: str) -> bool:
        if self.cfg.max_clips is not None:
            return self.attempted[language] < self.cfg.max_clips.get(language, 0)
        return self.hours[language] < self.cfg.hours.get(language, 0.0)

    def next_language(self, exhausted: set[str]) -> str | None:
        """The language furthest from its target, as a fraction of the target."""
        open_ = [lang for lang in self.cfg.languages if lang not in exhausted and self.needs(lang)]
        if not open_:
            return None
        if self.cfg.max_clips is not None:
            return min(open_, key=lambda lang: self.attempted[lang] / self.cfg.max_clips[lang])
        return min(open_, key=lambda lang: self.hours[lang] / self.cfg.hours[lang])


def build(cfg: SynthConfig, on_progress: Callable[[_Progress], None] | None = None,
          on_text: Callable[[str, int], None] | None = None) -> SynthReport:
    """Build (or resume) the corpus in `cfg.out_dir` until every language meets its target."""
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    # What is done comes first: a corrupt manifest stops the run before any slow preparation.
    manifest_path, rejected_path = cfg.out_dir / MANIFEST_NAME, cfg.out_dir / REJECTED_NAME
    progress = _Progress(cfg)
    done: set[str] = set()
    if manifest_path.exists():
        for u in iter_manifest(manifest_path, skip_partial_tail=True):
            done.add(u.id)
            progress.add_utterance({"language": u.language, "duration": u.duration})
            progress.attempted[u.language] += 1
    for r in read_rejections(rejected_path):
        if r.id not in done:
            done.add(r.id)
            progress.rejected += 1
            progress.attempted[r.id.split("-", 1)[0]] += 1

    sentences = prepare_sentences(cfg, on_text)
    prepare_rirs(cfg)
    start = time.monotonic()  # throughput counts synthesis, not the one-off text collection
    all_voices = available_voices(cfg.languages, cfg.engines)
    by_lang: dict[str, dict[str, list[Voice]]] = {}
    for lang in cfg.languages:
        by_lang[lang] = {e: [v for v in all_voices if v.engine == e and v.language == lang] for e in cfg.engines}
        if not any(by_lang[lang].values()):
            why = "; ".join(f"{e}: {r}" for e, r in engine_problems(cfg.engines, (lang,)).items())
            raise RuntimeError(f"no installed voice of {', '.join(cfg.engines)} speaks {lang!r}" + (f" ({why})" if why else ""))

    streams = {lang: job_stream([s for s in sentences if s.language == lang], by_lang[lang], cfg)
               for lang in cfg.languages}
    exhausted: set[str] = set()

    def next_job() -> dict | None:
        while True:
            lang = progress.next_language(exhausted)
            if lang is None:
                return None
            for job in streams[lang]:
                if job["id"] in done:
                    continue
                progress.attempted[lang] += 1
                return job
            exhausted.add(lang)  # no sentences in this language

    new_clips, new_audio = 0, 0.0
    worker_cfg = worker_settings(cfg)
    with ManifestWriter(manifest_path) as manifest, ManifestWriter(rejected_path) as rejected:

        def record(result: dict) -> None:
            nonlocal new_clips, new_audio
            if "utterance" in result:
                u = result["utterance"]
                manifest.write(u)
                progress.add_utterance(u)
                new_clips += 1
                new_audio += u["duration"]
            else:
                rejected.write(result["rejection"])
                progress.rejected += 1
            if on_progress:
                on_progress(progress)

        if cfg.ray_address:
            _run_ray(cfg, next_job, record, worker_cfg)
        else:
            _run_pool(cfg, next_job, record, worker_cfg)

    wall = time.monotonic() - start
    report = SynthReport(dict(progress.clips), dict(progress.hours), progress.rejected, new_clips, new_audio, wall)
    with open(cfg.out_dir / RUNS_NAME, "a") as f:
        f.write(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "workers": cfg.workers,
                            "backend": "ray" if cfg.ray_address else "process-pool", "new_clips": new_clips,
                            "new_audio_s": round(new_audio, 2), "wall_s": round(wall, 2),
                            "clips_per_s": round(report.clips_per_s, 3),
                            "audio_h_per_wall_h": round(report.audio_hours_per_wall_hour, 2)}) + "\n")
    write_parquet(cfg.out_dir / "manifest.parquet", iter_manifest(manifest_path))
    return report


def _run_pool(cfg: SynthConfig, next_job: Callable[[], dict | None], record: Callable[[dict], None],
              worker_cfg: dict) -> None:
    """Jobs on a process pool. A worker that dies (killed, out of memory) breaks the pool: the
    jobs it held are run again one at a time in a fresh pool, and a job that kills its worker
    on its own is rejected with that reason, so one such job cannot stop the run."""
    out_dir = str(cfg.out_dir)
    if cfg.workers <= 1:
        while (job := next_job()) is not None:
            record(render_job(job, out_dir, worker_cfg))
        return
    # A few jobs queued per worker keep every core busy without planning far past the target.
    max_in_flight = 2 * cfg.workers
    suspects: list[dict] = []  # jobs that were in flight when a worker died
    while True:
        pool = ProcessPoolExecutor(max_workers=cfg.workers)
        in_flight: dict = {}

        def submit(job: dict) -> None:
            try:
                fut = pool.submit(render_job, job, out_dir, worker_cfg)
            except BrokenProcessPool:
                in_flight[object()] = job  # counted with the jobs the dead worker took down
                raise
            in_flight[fut] = job

        try:
            while True:
                if suspects:  # one at a time, so that a job which kills its worker is caught alone
                    if not in_flight:
                        submit(suspects.pop(0))
                else:
                    while len(in_flight) < max_in_flight and (job := next_job()) is not None:
                        submit(job)
                if not in_flight:
                    return
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    result = fut.result()  # raises BrokenProcessPool if the worker died
                    del in_flight[fut]
                    record(result)
        except BrokenProcessPool:
            lost = list(in_flight.values())
            if len(lost) == 1 and lost[0].get("suspect"):
                # It ran alone and its worker died again: the job itself is the cause.
                job = lost[0]
                record({"rejection": Rejection(job["id"], "synth", "the worker process died running this job",
                                               job["sentence"].get("text")).to_dict()})
            else:
                suspects.extend({**job, "suspect": True} for job in lost)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(cfg: SynthConfig, next_job: Callable[[], dict | None], record: Callable[[dict], None],
             worker_cfg: dict) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if cfg.ray_address == "local":
            ray.init(num_cpus=cfg.workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=cfg.ray_address, log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        while True:
            batch = []
            while len(batch) < cfg.ray_batch and (job := next_job()) is not None:
                batch.append({"job": json.dumps(job, ensure_ascii=False)})
            if not batch:
                return
            ds = ray.data.from_items(batch, override_num_blocks=max(1, min(len(batch), 4 * cfg.workers)))
            ds = ds.map(_render_row, fn_kwargs={"out_dir": str(cfg.out_dir.resolve()), "cfg": worker_cfg})
            for row in ds.iter_rows():
                record(json.loads(row["result"]))
    finally:
        if started_here:
            ray.shutdown()
