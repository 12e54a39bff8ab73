"""MTP analysis of a unisono checkpoint: acceptance by draft position, accepted length, speed-up.

Terms (as in `unisono.decode.verify`): each verification pass checks K drafts; the *accepted
length* of a pass is how many of them match the main head's greedy choices (0..K), and the pass
then emits accepted + 1 tokens (the bonus token). *Acceptance at position i* is
P(draft i accepted | drafts 1..i-1 accepted).

The speed-up is decode time only: each clip is encoded once (encoder + adaptor + prompt) outside
the timed region, then greedy and MTP decoding run on the same prompt embeddings, alternately,
`repeats` times, after a warm-up; medians are compared. The check that MTP output equals greedy
output token for token is part of the result, not an assumption.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from unisono.decode.stats import DecodeStats

if TYPE_CHECKING:
    from unisono.model.unisono import Unisono


@dataclass
class MTPConfig:
    drafts: list[int | None] = field(default_factory=lambda: [None])  # K values to analyse (None: all branches)
    repeats: int = 3
    warmup: int = 1  # clips decoded once per mode before timing
    max_new_tokens: int | None = None  # None: from each clip's duration, as the ASR mode does


@dataclass
class MTPResult:
    """Greedy vs MTP with K drafts on the same clips."""

    n_drafts: int
    clips: int
    audio_seconds: float
    identical: bool  # MTP tokens == greedy tokens, every clip
    greedy_passes: int
    mtp_passes: int
    tokens: int
    greedy_seconds: float  # median decode time over repeats
    mtp_seconds: float
    stats: dict  # DecodeStats.to_dict() of the MTP run
    greedy_repeat_seconds: list[float] = field(default_factory=list)
    mtp_repeat_seconds: list[float] = field(default_factory=list)

    @property
    def decode_stats(self) -> DecodeStats:
        return DecodeStats(**self.stats)

    @property
    def speedup(self) -> float:
        """greedy decode time / MTP decode time (above 1: MTP is faster)."""
        return self.greedy_seconds / self.mtp_seconds if self.mtp_seconds else float("nan")

    @property
    def tokens_per_pass(self) -> float:
        return self.tokens / self.mtp_passes if self.mtp_passes else 0.0

    @property
    def pass_reduction(self) -> float:
        """greedy passes / MTP passes: the speed-up a pass-bound decoder would see."""
        return self.greedy_passes / self.mtp_passes if self.mtp_passes else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        s = self.decode_stats
        d.update(speedup=self.speedup, tokens_per_pass=self.tokens_per_pass, pass_reduction=self.pass_reduction,
                 mean_accepted=s.mean_accepted, acceptance_rate=s.acceptance_rate)
        return d


@dataclass
class _Prompt:
    embeds: torch.Tensor  # (1, L, D)
    mask: torch.Tensor  # (1, L) bool
    seconds: float  # audio duration


@torch.no_grad()
def prepare_prompts(model: "Unisono", clips: Sequence[np.ndarray], language: str | None = None) -> list[_Prompt]:
    """Prompt embeddings per clip (log-mel, encoder, adaptor), computed once, outside any timing."""
    from unisono.audio.features import batch_log_mel
    from unisono.modes.asr import asr_prompt

    out = []
    for clip in clips:
        mel, lengths = batch_log_mel([clip], n_mels=model.config.encoder.n_mels)
        feats, flen = model.encode_audio(mel.to(model.device), lengths.to(model.device))
        ids = torch.tensor([model.vocab.encode_prompt(asr_prompt(int(flen[0]), language)).ids], device=model.device)
        embeds = model.embed_prompt(ids, feats, flen)
        out.append(_Prompt(embeds, torch.ones(ids.shape, dtype=torch.bool, device=model.device), len(clip) / 16000))
    return out


def _decode(model: "Unisono", prompt: _Prompt, mtp: bool, n_drafts: int | None, max_new_tokens: int | None):
    from unisono.decode.generate import GenerationConfig, generate
    from unisono.modes.asr import _max_tokens, text_tokens_mask

    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens or _max_tokens(prompt.seconds),  # the ASR mode's budget
        mtp=mtp, n_drafts=n_drafts, stop_ids=(model.vocab.end_id,),
    )
    return generate(model, prompt.embeds, prompt.mask, cfg, allowed=text_tokens_mask(model))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def analyse_mtp(
    model: "Unisono",
    clips: Sequence[np.ndarray],
    config: MTPConfig,
    language: str | None = None,
    progress: Callable[[], None] | None = None,
) -> list[MTPResult]:
    """One MTPResult per K in `config.drafts`; every K is compared against the same greedy run."""
    if model.mtp is None:
        raise ValueError("this checkpoint has no MTP head: there is nothing to analyse")
    n_branches = model.config.mtp.n_branches
    prompts = prepare_prompts(model, clips, language)
    audio_s = sum(p.seconds for p in prompts)

    def timed(mtp: bool, k: int | None):
        outs, elapsed = [], 0.0
        for p in prompts:
            _sync(model.device)
            t0 = time.perf_counter()
            outs.append(_decode(model, p, mtp, k, config.max_new_tokens))
            _sync(model.device)
            elapsed += time.perf_counter() - t0
            if progress:
                progress()
        return outs, elapsed

    for p in prompts[: config.warmup]:
        _decode(model, p, False, None, config.max_new_tokens)
        _decode(model, p, True, None, config.max_new_tokens)

    results = []
    greedy_times: list[float] = []
    greedy_outs = None
    for k in config.drafts:
        kk = n_branches if k is None else k
        if not 1 <= kk <= n_branches:
            raise ValueError(f"drafts must be within 1..{n_branches} (the checkpoint's MTP branches), got {k}")
        mtp_times = []
        mtp_outs = None
        for _ in range(config.repeats):  # alternate, so that load drift hits both modes alike
            if len(greedy_times) < config.repeats:
                greedy_outs, t = timed(False, None)
                greedy_times.append(t)
            mtp_outs, t = timed(True, kk)
            mtp_times.append(t)
        stats = DecodeStats(n_branches=kk)
        for o in mtp_outs:
            stats = stats.merge(o.stats)
        results.append(MTPResult(
            n_drafts=kk,
            clips=len(prompts),
            audio_seconds=round(audio_s, 3),
            identical=[o.tokens for o in greedy_outs] == [o.tokens for o in mtp_outs],
            greedy_passes=sum(o.stats.passes for o in greedy_outs),
            mtp_passes=stats.passes,
            tokens=stats.tokens,
            greedy_seconds=statistics.median(greedy_times),
            mtp_seconds=statistics.median(mtp_times),
            stats=stats.to_dict(),
            greedy_repeat_seconds=[round(t, 5) for t in greedy_times],
            mtp_repeat_seconds=[round(t, 5) for t in mtp_times],
        ))
    return results
