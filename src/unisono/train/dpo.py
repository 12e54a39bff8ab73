"""Preference alignment on the one Trainer: DPO (or IPO, or DPO with a reward-margin offset) on the
pairs of `unisono.train.rollouts` (TTS) and `unisono.train.chat_rollouts` (spoken dialogue).

    RUN/init ◄─ the model the pairs were sampled from (the policy starts here; a frozen copy is the reference)
    micro-batch g: `pairs_per_batch` pairs drawn with rng(seed, g); rows [chosen..., rejected...], each
                   the TTS prompt of training + <|speech_start|> + the answer's speech tokens
                   + <|speech_end|> <|end|>, or the chat mode's prompt (persona, earlier turns, the
                   turn's audio) + the reply's text + <|end|>; scored on the answer only
    loss: `preference.dpo_loss` of the policy's and the reference's summed log-probabilities
    ─► RUN/model: a unisono checkpoint whose meta records the stage, β and the pairs
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from unisono.train.config import OptimConfig, PhaseConfig, RunConfig
from unisono.train.preference import dpo_loss, model_logps
from unisono.train.trainer import Objective


@dataclass
class DPOConfig:
    init: str  # the model the pairs were sampled from
    pairs: list[str]  # pairs.jsonl files
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid (DPO), ipo, offset (the margin-conditioned variant)
    label_smoothing: float = 0.0
    offset_scale: float = 1.0  # offset: Δ = offset_scale x the pair's reward margin
    pairs_per_batch: int = 4
    stage: str = "dpo-tts"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(weight_decay=0.0))
    run: RunConfig = field(default_factory=lambda: RunConfig(checkpoint_every=50, precision="fp32"))
    phases: list[PhaseConfig] = field(default_factory=lambda: [PhaseConfig(
        name="dpo", steps=200, trainable=["decoder.*"], lr=1e-5, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_pairs(paths: list[str]) -> list[dict]:
    pairs = []
    for path in paths:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                pair = json.loads(line)
                chat = "audio" in pair["prompt"]  # a reply's text; it may be empty when it is the one rejected
                if not (pair["chosen"] and (chat or pair["rejected"]) and pair["prompt"]["text"]):
                    raise ValueError("a pair needs a prompt text and two non-empty answers")
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}, line {number}: not a preference pair ({e})") from None
            pairs.append(pair)
    if not pairs:
        raise ValueError(f"no preference pairs in {', '.join(paths)}")
    return pairs


def encode_answer(vocab, prompt: dict, answer, n_audio: int = 0) -> tuple[list[int], int]:
    """(ids, first scored position) of a prompt and its answer: speech tokens after a TTS prompt, or
    a reply's text after the chat mode's prompt whose spoken turn fills `n_audio` positions."""
    from unisono.model.vocab import Audio, Turn
    from unisono.modes.chat import chat_turns
    from unisono.modes.tts import tts_prompt

    if "audio" in prompt:
        history = [Turn(role, [text]) for role, text in prompt.get("history") or []]
        context = vocab.encode_prompt(chat_turns(prompt.get("persona"), history, Audio(n_audio))).ids
        return context + vocab.encode_text(answer) + [vocab.end_id], len(context)
    context = vocab.encode_prompt(tts_prompt(prompt["text"], prompt.get("instruct"))).ids + [vocab.id("speech_start")]
    answer = [vocab.speech_offset + int(c) for c in answer] + [vocab.id("speech_end"), vocab.end_id]
    return context + answer, len(context)


@dataclass
class PairBatch:
    input_ids: torch.Tensor  # (2B, L): B chosen rows then B rejected rows, right-padded
    attention_mask: torch.Tensor
    targets: torch.Tensor  # -100 but on the answers
    margin: torch.Tensor  # (B,)
    mel: torch.Tensor | None = None  # (N, n_mels, T): the spoken turns of chat rows, in row order
    mel_lengths: torch.Tensor | None = None  # (N,)

    def to(self, device) -> "PairBatch":
        return PairBatch(*(None if t is None else t.to(device) for t in dataclasses.astuple(self)))


class PairStream:
    def __init__(self, pairs: list[dict], vocab, pairs_per_batch: int, seed: int, stride: int = 4, n_mels: int = 80):
        self.pairs, self.vocab, self.n, self.seed = pairs, vocab, pairs_per_batch, seed
        self.stride, self.n_mels = stride, n_mels
        self._clips: dict[str, np.ndarray] = {}

    def _clip(self, path: str) -> np.ndarray:
        from unisono.audio.io import load_audio

        if path not in self._clips:
            self._clips[path] = load_audio(path)
        return self._clips[path]

    def batch(self, g: int) -> PairBatch:
        from unisono.train.data import audio_positions

        rng = np.random.default_rng([self.seed, g])
        chosen = [self.pairs[i] for i in rng.choice(len(self.pairs), size=self.n, replace=len(self.pairs) < self.n)]
        clips = [self._clip(p["prompt"]["audio"]) for _ in ("chosen", "rejected") for p in chosen if "audio" in p["prompt"]]
        positions = iter(audio_positions(len(c), self.stride) for c in clips)
        rows = [encode_answer(self.vocab, p["prompt"], p[side], next(positions) if "audio" in p["prompt"] else 0)
                for side in ("chosen", "rejected") for p in chosen]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), self.vocab.end_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        targets = torch.full((len(rows), width), -100, dtype=torch.long)
        for r, (row, start) in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = True
            targets[r, start : len(row)] = torch.tensor(row[start:])
        mel = mel_lengths = None
        if clips:
            from unisono.audio.features import batch_log_mel

            mel, mel_lengths = batch_log_mel(clips, n_mels=self.n_mels)
        return PairBatch(ids, mask, targets, torch.tensor([float(p["margin"]) for p in chosen]), mel, mel_lengths)

    def batches(self, start: int, stride: int) -> Iterator[PairBatch]:
        return (self.batch(g) for g in itertools.count(start, stride))

    def position(self, g: int) -> dict[str, Any]:
        return {}

    def counters(self) -> dict[str, Any]:
        return {}


class DPOObjective(Objective):
    COUNTS = ("pairs",)

    def __init__(self, config: DPOConfig):
        if config.loss_type not in ("sigmoid", "ipo", "offset"):
            raise ValueError(f"loss_type {config.loss_type!r}: sigmoid, ipo or offset")
        self.config = config
        self.pairs = read_pairs(config.pairs)
        self.reference = None

    def prepare(self, run: Path) -> None:
        from unisono.model.unisono import Unisono

        if not (run / "init" / "config.json").is_file():
            Unisono.load(self.config.init).save(run / "init")

    def build(self, run: Path, device: torch.device):
        from unisono.model.unisono import Unisono

        policy = Unisono.load(run / "init")
        if policy.vocab.n_speech == 0 and any("audio" not in p["prompt"] for p in self.pairs):
            raise ValueError(f"{self.config.init} has no speech tokens: there is nothing to align")
        self.reference = Unisono.load(run / "init").to(device).eval().requires_grad_(False)
        return policy

    def stream(self, model, phase_index: int, phase: PhaseConfig, seed: int) -> PairStream:
        return PairStream(self.pairs, model.vocab, self.config.pairs_per_batch, seed + phase_index,
                          model.config.adaptor.stride, model.config.encoder.n_mels)

    def loss(self, model, batch: PairBatch, phase: PhaseConfig):
        logps = model_logps(model, batch.input_ids, batch.attention_mask, batch.targets, batch.mel, batch.mel_lengths)
        with torch.no_grad():
            reference = model_logps(self.reference, batch.input_ids, batch.attention_mask, batch.targets, batch.mel,
                                    batch.mel_lengths)
        b = batch.margin.shape[0]
        cfg = self.config
        losses, chosen, rejected = dpo_loss(logps[:b], logps[b:], reference[:b], reference[b:], beta=cfg.beta,
                                            loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing,
                                            margin=batch.margin, offset_scale=cfg.offset_scale)
        loss = losses.mean()
        return loss, {"loss": float(loss.detach()), "reward_chosen": float(chosen.mean()),
                      "reward_rejected": float(rejected.mean()), "reward_margin": float((chosen - rejected).mean()),
                      "reward_accuracy": float((chosen > rejected).float().mean()), "pairs": float(b)}

    def export(self, model_state: dict, run: Path, processes: int) -> Path:
        from unisono.model.unisono import Unisono

        model = Unisono.load(run / "init")
        model.load_state_dict(model_state, strict=False)
        cfg = self.config
        model.config.meta["stages"] = list(model.config.meta.get("stages", [])) + [{
            "stage": cfg.stage, "loss_type": cfg.loss_type, "beta": cfg.beta, "pairs": list(cfg.pairs),
            "phases": [{"name": p.name, "steps": p.steps, "lr": p.lr, "trainable": p.trainable} for p in cfg.phases],
            "processes": processes}]
        model.save(run / "model")
        return run / "model"
