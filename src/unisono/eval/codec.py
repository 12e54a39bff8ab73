"""Speech codec evaluation: is speech still speech after wav -> tokens -> wav?

Per set, every clip is resynthesised (its own voice as the reference) and measured:

- intelligibility: WER of an independent recogniser (faster-whisper, bundled tiny.en, int8,
  greedy) on the resynthesised audio, beside its WER on the original (SPEC §4 scoring); optionally
  the same from a second recogniser, the check: a codec trained with the first one's decoder as a
  loss must also be judged by one that shares nothing with it (PocketSphinx);
- speaker similarity: cosine between GE2E speaker embeddings (resemblyzer, a model trained
  apart from unisono) of the original and the resynthesis;
- token rate and bitrate (log2 of the codebook per token, and the entropy of the tokens used);
- speed: real-time factors of the tokenizer, the offline detokenizer and the streaming
  detokenizer, and the first-chunk latency of streaming (tokens pushed one at a time, as a
  decoder emits them: the wall time until the first audio comes out);
- streaming tokenizer agreement: the share of tokens a streamed tokenizer gives identical to
  the offline tokens.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from unisono.eval.manifest import EvalSet
from unisono.eval.metrics import ErrorCounts, format_difference
from unisono.eval.speech_scores import SpeakerSimilarity


@dataclass
class ClipResult:
    id: str
    seconds: float
    reference: str
    hyp_original: str
    hyp_resynth: str
    speaker_similarity: float
    tokens: int
    stream_agreement: float
    check_original: str | None = None  # the check recogniser's transcripts, when one is given
    check_resynth: str | None = None


@dataclass
class SetResult:
    name: str
    manifest: str
    clips: list[ClipResult] = field(default_factory=list)
    wer_original: float = float("nan")
    wer_resynth: float = float("nan")
    # 95% interval of wer_resynth - wer_original, a paired bootstrap over the clips: how far the set's
    # clips alone could move the gap
    wer_delta_interval: tuple[float, float] = (float("nan"), float("nan"))
    # clips where the recogniser looped: more inserted words than the reference has. A few such
    # clips can outweigh every other error of a set, so the report counts them beside the WER.
    runaway_original: int = 0
    runaway_resynth: int = 0
    # the same WERs on the clips where neither side ran away: what the codec did to the other clips
    loop_free_clips: int = 0
    wer_original_loop_free: float = float("nan")
    wer_resynth_loop_free: float = float("nan")
    wer_loop_free_delta_interval: tuple[float, float] = (float("nan"), float("nan"))
    speaker_similarity: float = float("nan")
    token_rate: float = float("nan")
    bitrate_nominal: float = float("nan")
    bitrate_entropy: float = float("nan")
    stream_agreement: float = float("nan")
    tokenizer_rtf: float = float("nan")
    detokenizer_rtf: float = float("nan")
    stream_detokenizer_rtf: float = float("nan")
    first_chunk_ms: float = float("nan")
    recognizer: str = ""
    # clips that could not be read (id, reason): left out of every figure, and said so
    unreadable: list[dict] = field(default_factory=list)
    check_recognizer: str | None = None
    check_wer_original: float = float("nan")
    check_wer_resynth: float = float("nan")
    check_wer_delta_interval: tuple[float, float] = (float("nan"), float("nan"))

    def to_dict(self) -> dict:
        return asdict(self)


def is_runaway(counts: ErrorCounts) -> bool:
    """The recogniser looped on this clip: it inserted more words than the reference holds."""
    return counts.insertions > counts.reference_length


def token_entropy_bits(tokens: list[np.ndarray], codebook_size: int) -> float:
    """Entropy (bits per token) of the unigram token distribution over a set."""
    counts = np.bincount(np.concatenate(tokens), minlength=codebook_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def first_chunk_latency(codec, tokens, voice, first_chunk_tokens: int = 4) -> tuple[float, np.ndarray]:
    """Seconds from the start of a stream, tokens pushed one at a time, to its first audio chunk;
    and the whole streamed audio."""
    stream = codec.detokenizer_stream(voice, first_chunk_tokens=first_chunk_tokens)
    t0, first, parts = time.perf_counter(), None, []
    for t in tokens.tolist():
        audio = stream.push([t])
        if audio.size:
            first = first if first is not None else time.perf_counter() - t0
            parts.append(audio)
    parts.append(stream.flush())
    if first is None:
        first = time.perf_counter() - t0
    return first, np.concatenate(parts)


def evaluate_set(
    codec,
    recognizer,
    similarity: SpeakerSimilarity | None,
    eval_set: EvalSet,
    progress: Callable[[float], None] | None = None,
    keep_audio: dict | None = None,
    check=None,
) -> SetResult:
    """`recognizer` and `check` (optional, a second recogniser) are `unisono.peers.recognizers.Recognizer`s or
    anything with `transcribe(audio, language=...)` and, for `check`, a `name`."""
    from unisono.audio.io import AudioError, load_audio
    from unisono.eval.metrics import count_errors, difference_interval, total
    from unisono.eval.normalize import default_scoring_name, make_scoring

    score = make_scoring(default_scoring_name(eval_set.name, eval_set.language))
    result = SetResult(eval_set.name, str(eval_set.manifest))
    counts_orig, counts_resyn, all_tokens = [], [], []
    check_orig, check_resyn = [], []
    t_tok, t_detok, t_stream, audio_s, latencies = 0.0, 0.0, 0.0, 0.0, []
    # the tokenizer's encoder loads on first use, and first calls pay one-off allocation costs:
    # neither is a cost per second of audio, so neither belongs in the real-time factors
    warm = np.zeros(16000, dtype=np.float32)
    codec.detokenize(codec.tokenize(warm), codec.speaker_embedding(warm))
    for i, utt in enumerate(eval_set.utterances):
        try:
            audio = load_audio(utt.audio, max_duration_s=120)
        except (AudioError, OSError) as e:
            result.unreadable.append({"id": utt.id, "error": str(e)})
            continue
        seconds = len(audio) / 16000
        t0 = time.perf_counter()
        tokens = codec.tokenize(audio)
        t_tok += time.perf_counter() - t0
        voice = codec.speaker_embedding(audio)
        t0 = time.perf_counter()
        resynth = codec.detokenize(tokens, voice)
        t_detok += time.perf_counter() - t0
        latency, streamed = first_chunk_latency(codec, tokens, voice)
        latencies.append(latency)
        t0 = time.perf_counter()
        list(codec.stream_detokenize([tokens[j:j + 25] for j in range(0, len(tokens), 25)], voice))
        t_stream += time.perf_counter() - t0
        audio_s += seconds
        stream_tok = codec.tokenizer.stream()
        st = [stream_tok.push(audio[j:j + 5120]) for j in range(0, len(audio), 5120)] + [stream_tok.flush()]
        st = np.concatenate([s.numpy() for s in st])
        agreement = float(np.mean(st == tokens.numpy())) if len(st) == len(tokens) else float("nan")
        hyp_o = recognizer.transcribe(audio, language="en")
        hyp_r = recognizer.transcribe(resynth, language="en")
        ref = score.normalize(utt.text)
        counts_orig.append(count_errors(ref, score.normalize(hyp_o), score.unit))
        counts_resyn.append(count_errors(ref, score.normalize(hyp_r), score.unit))
        sim = similarity(audio, resynth) if similarity else float("nan")
        all_tokens.append(tokens.numpy())
        clip = ClipResult(utt.id, seconds, utt.text, hyp_o, hyp_r, sim, len(tokens), agreement)
        if check is not None:
            clip.check_original = check.transcribe(audio, language="en")
            clip.check_resynth = check.transcribe(resynth, language="en")
            check_orig.append(count_errors(ref, score.normalize(clip.check_original), score.unit))
            check_resyn.append(count_errors(ref, score.normalize(clip.check_resynth), score.unit))
        result.clips.append(clip)
        if keep_audio is not None and i == 0:
            keep_audio[eval_set.name] = (utt.id, audio, resynth)
        if progress:
            progress(seconds)
    if not result.clips:
        return result
    k = codec.config.tokenizer.codebook_size
    result.wer_original = total(counts_orig).rate
    result.wer_resynth = total(counts_resyn).rate
    result.wer_delta_interval = difference_interval(counts_orig, counts_resyn)
    looped_orig, looped_resyn = [is_runaway(c) for c in counts_orig], [is_runaway(c) for c in counts_resyn]
    result.runaway_original, result.runaway_resynth = sum(looped_orig), sum(looped_resyn)
    loop_free = [(o, r) for o, r, lo, lr in zip(counts_orig, counts_resyn, looped_orig, looped_resyn) if not (lo or lr)]
    result.loop_free_clips = len(loop_free)
    if loop_free:
        result.wer_original_loop_free = total([o for o, _ in loop_free]).rate
        result.wer_resynth_loop_free = total([r for _, r in loop_free]).rate
        result.wer_loop_free_delta_interval = difference_interval([o for o, _ in loop_free], [r for _, r in loop_free])
    result.recognizer = recognizer.name
    if check is not None:
        result.check_recognizer = check.name
        result.check_wer_original = total(check_orig).rate
        result.check_wer_resynth = total(check_resyn).rate
        result.check_wer_delta_interval = difference_interval(check_orig, check_resyn)
    result.speaker_similarity = statistics.mean(c.speaker_similarity for c in result.clips)
    result.token_rate = sum(c.tokens for c in result.clips) / audio_s
    result.bitrate_nominal = result.token_rate * math.log2(k)
    result.bitrate_entropy = result.token_rate * token_entropy_bits(all_tokens, k)
    result.stream_agreement = float(np.nanmean([c.stream_agreement for c in result.clips]))
    result.tokenizer_rtf = t_tok / audio_s
    result.detokenizer_rtf = t_detok / audio_s
    result.stream_detokenizer_rtf = t_stream / audio_s
    result.first_chunk_ms = 1000 * statistics.median(latencies)
    return result


def plot_spectrograms(examples: dict, path: Path, codec) -> Path:
    """Original above resynthesis, one column per set, on the codec's log-mel scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    fig, axes = plt.subplots(2, len(examples), figsize=(6 * len(examples), 5.5), squeeze=False)
    for col, (name, (utt_id, orig, resyn)) in enumerate(examples.items()):
        for row, (label, wave) in enumerate((("original", orig), ("resynthesised", resyn))):
            mel = codec.mel(torch.from_numpy(np.asarray(wave, dtype=np.float32))).numpy()
            ax = axes[row][col]
            ax.imshow(mel, origin="lower", aspect="auto", vmin=-11.5, vmax=max(2.0, float(mel.max())), cmap="magma",
                      extent=(0, mel.shape[1] / 100, 0, mel.shape[0]))
            ax.set_title(f"{name} / {utt_id}: {label}", fontsize=9)
            ax.set_ylabel("mel bin")
            ax.set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: list[SetResult], directory: Path, command: str, codec_info: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps({"command": command, "codec": codec_info,
                                                        "sets": [r.to_dict() for r in results]}, indent=2))
    lines = ["# Speech codec: resynthesis", "", f"    {command}", "",
             f"Codec: {codec_info}", "",
             f"Recogniser: {results[0].recognizer if results else ''}", "",
             "| set | clips | WER original | WER resynth | Δ (95% interval) | speaker sim | tokens/s | bits/s (nominal / entropy) "
             "| runaway clips (orig / resynth) | tokenizer RTF | detok RTF | stream detok RTF | first chunk ms | stream token agreement |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(
            f"| {r.name} | {len(r.clips)} | {100 * r.wer_original:.1f}% | {100 * r.wer_resynth:.1f}% | "
            f"{format_difference(r.wer_resynth - r.wer_original, r.wer_delta_interval)} | {r.speaker_similarity:.3f} | {r.token_rate:.1f} | "
            f"{r.bitrate_nominal:.0f} / {r.bitrate_entropy:.0f} | {r.runaway_original} / {r.runaway_resynth} | {r.tokenizer_rtf:.3f} | {r.detokenizer_rtf:.3f} | "
            f"{r.stream_detokenizer_rtf:.3f} | {r.first_chunk_ms:.0f} | {100 * r.stream_agreement:.1f}% |")
    checked = [r for r in results if r.check_recognizer]
    if checked:
        lines += ["", "The check recogniser, on the same audio of both sides:", "",
                  "| set | recogniser | WER original | WER resynth | Δ (95% interval) |", "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {r.name} | {r.check_recognizer} | {100 * r.check_wer_original:.1f}% | {100 * r.check_wer_resynth:.1f}% | "
                  f"{format_difference(r.check_wer_resynth - r.check_wer_original, r.check_wer_delta_interval)} |"
                  for r in checked]
    lines += ["", "Without the runaway clips (those where the original or the resynthesis made the recogniser loop):", "",
              "| set | clips | WER original | WER resynth | Δ (95% interval) |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.name} | {r.loop_free_clips} | {100 * r.wer_original_loop_free:.1f}% | {100 * r.wer_resynth_loop_free:.1f}% | "
              f"{format_difference(r.wer_resynth_loop_free - r.wer_original_loop_free, r.wer_loop_free_delta_interval)} |"
              for r in results]
    for r in results:
        if r.unreadable:
            lines += ["", f"Unreadable clips of {r.name}, left out: " + "; ".join(f"{u['id']} ({u['error']})" for u in r.unreadable)]
    lines += ["", "Δ: WER resynth - WER original, in points; in brackets the 95% interval of a paired bootstrap over the "
              "set's clips (2000 resamples): the spread the choice of clips alone gives it.",
              "Runaway: the recogniser inserted more words than the reference holds (a decoding loop).",
              "Per clip: results.json (reference, both transcripts, similarity)."]
    path = directory / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
