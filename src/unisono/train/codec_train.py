"""Training of the speech codec on a prepared data folder (`unisono.train.codec_data`).

Independent jobs, each resumable from its last checkpoint:

1. `fit_tokenizer`: k-means (scikit-learn MiniBatchKMeans) on pooled encoder features of one
   layer -> the codebook; then every clip's tokens (nearest centroid). Or a codebook trained for the
   words (`unisono.train.codec_codebook`), stored as linear scores (centroids and a bias).
2. `train_vocoder`: mel -> waveform on random 0.8 s segments. Loss = L1 between log-mels +
   multi-resolution STFT loss (spectral convergence + log-magnitude L1), as in Parallel WaveGAN
   (Yamamoto et al. 2020); with `adversarial_weight`, also multi-period and multi-resolution
   waveform discriminators (`unisono.train.wave_discriminator`), as HiFi-GAN and Vocos train theirs.
3. `train_token2mel`: tokens + a voice -> mel. The voice is taken from another clip of the same
   speaker, so the model learns to take timbre from the reference and words from the tokens (or,
   for a `self_reference` share of the crops, from the clip itself: its own pitch register).
   Loss = L1 between log-mels, and the optional terms of `TrainConfig` (re-encoding, transcript,
   envelope, adversarial: a mel-patch discriminator, `unisono.train.mel_discriminator`, whose state
   the checkpoint also holds).
4. `train_refiner`: the flow-matching mel refiner on top of a trained, frozen token-to-mel model
   (and its speaker encoder): from the L1 estimate to the real mel. Loss = flow matching.
5. `train_vocoder_gta`: the vocoder fine-tuned on the detokenizer's own mels against the real
   audio they came from (tokens are frame-aligned with it). Loss as in 2, the adversarial term too.

Run folder:

    run/
      tokenizer.safetensors     centroids (K, D) float32 [and bias (K,): a trained codebook], with config
      tokens.npy                int16 tokens of every clip, in the data folder's order
      vocoder.pt, token2mel.pt, refiner.pt, vocoder-gta.pt   training state (model, optimiser, step, RNG), written atomically
      vocoder.jsonl, token2mel.jsonl, refiner.jsonl, vocoder-gta.jsonl   loss log
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from unisono.codec.config import CodecConfig
from unisono.codec.mel import MelSpectrogram, spectral_envelope
from unisono.codec.refiner import MelRefiner
from unisono.codec.token2mel import SpeakerEncoder, Token2Mel, length_mask
from unisono.codec.vocoder import Vocoder
from unisono.train.codec_data import CodecData
from unisono.train.gan import discriminator_loss, generator_loss
from unisono.train.mel_discriminator import MelDiscriminator, MelDiscriminatorConfig, normalise, paired_patches
from unisono.train.wave_discriminator import WaveDiscriminator, WaveDiscriminatorConfig
from unisono.train.wave_discriminator import normalise as normalise_waves  # the mel discriminator has its own

TOKENIZER_FILE = "tokenizer.safetensors"
WAVE_DISCRIMINATORS = "multi-period and multi-resolution waveform discriminators"
TOKENS_FILE = "tokens.npy"


# ---- 1. tokenizer -------------------------------------------------------------------------------

def fit_tokenizer(data: CodecData, run: Path, codebook_size: int, max_frames: int = 300_000, seed: int = 0,
                  log: Callable[[str], None] = print, inits: int = 3, iterations: int = 100,
                  clip_weights: np.ndarray | None = None) -> torch.Tensor:
    """Fit the codebook on (a seeded sample of) the stored features, then tokenize every clip. With
    `clip_weights` (one per clip, e.g. `CodecData.draw_weights`), each frame weighs as its clip does in k-means."""
    from sklearn.cluster import MiniBatchKMeans

    assert data.features is not None and data.layer is not None
    feats = data.features
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(feats.shape[0], size=min(max_frames, feats.shape[0]), replace=False))
    sample = np.asarray(feats[take], dtype=np.float32)
    frame_weights = None
    if clip_weights is not None:
        starts = np.array([c["feature_offset"] for c in data.clips])  # clips are stored in order, back to back
        frame_weights = np.asarray(clip_weights, dtype=np.float64)[np.searchsorted(starts, take, side="right") - 1]
    t0 = time.time()
    km = MiniBatchKMeans(n_clusters=codebook_size, batch_size=8192, n_init=inits, max_iter=iterations, random_state=seed,
                         reassignment_ratio=0.001)
    km.fit(sample, sample_weight=frame_weights)
    log(f"k-means: {codebook_size} centroids on {len(sample)} frames in {time.time() - t0:.0f} s, inertia/frame {km.inertia_ / len(sample):.2f}")
    centroids = torch.from_numpy(km.cluster_centers_.astype(np.float32))
    tokenize_data(data, run, centroids, log)
    return centroids


@dataclass
class Codebook:
    """A codebook to tokenize with: its entries, their bias (a trained codebook's), the encoder layer and
    frame difference they quantise, and the codec settings where it comes from an exported codec folder."""
    centroids: torch.Tensor
    bias: torch.Tensor | None
    layer: int
    frame_difference: float
    settings: CodecConfig | None = None


def read_codebook(path: Path) -> Codebook:
    """The codebook of an exported codec folder (e.g. the shipped model's speech/) or of a run folder
    (its tokenizer.safetensors)."""
    from safetensors import safe_open

    from unisono.codec.codec import CONFIG_FILE, SpeechCodec

    if (path / CONFIG_FILE).is_file():
        codec = SpeechCodec.load(path)
        bias = None if codec.token_bias is None else codec.token_bias.float()
        return Codebook(codec.centroids.float(), bias, codec.config.tokenizer.layer, codec.config.tokenizer.frame_difference,
                        codec.config)
    source = path / TOKENIZER_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing")
    with safe_open(str(source), "pt") as f:
        bias = f.get_tensor("bias").float() if "bias" in f.keys() else None
        return Codebook(f.get_tensor("centroids").float(), bias, int(f.metadata()["layer"]),
                        float(f.metadata().get("frame_difference", 0.0)))


def check_codebook_fits(data: CodecData, centroids: torch.Tensor, frame_difference: float | None = None) -> None:
    """Refuse a codebook whose entries are not pooled as the folder's stored features are (their width, and the
    frame difference of the codebook's tokenizer where it is known)."""
    pooled_as = data.frame_difference if frame_difference is None else frame_difference
    if centroids.shape[1] != data.features.shape[1] or pooled_as != data.frame_difference:
        raise ValueError(f"a codebook of {centroids.shape[1]}-wide entries (frame difference {pooled_as}) does not fit the "
                         f"{data.features.shape[1]}-wide features of {data.directory} (frame difference {data.frame_difference}): "
                         "prepare the data as the codebook's tokenizer pools them")


def tokenize_data(data: CodecData, run: Path, centroids: torch.Tensor, log: Callable[[str], None] = print,
                  bias: torch.Tensor | None = None) -> np.ndarray:
    """Store the codebook in the run and the tokens of every clip of the data folder (tokens.npy).
    Called with a trained codec's centroids, it tokenizes new data without changing the codebook,
    so the token ids keep their meaning for the models already trained on them."""
    from safetensors.torch import save_file

    assert data.features is not None and data.layer is not None
    check_codebook_fits(data, centroids)
    run.mkdir(parents=True, exist_ok=True)
    tensors = {"centroids": centroids.contiguous()} | ({} if bias is None else {"bias": bias.contiguous()})
    save_file(tensors, str(run / TOKENIZER_FILE), metadata={"layer": str(data.layer), "codebook_size": str(len(centroids)),
                                                             "frame_difference": str(data.frame_difference)})
    tokens = assign_tokens(data.features, centroids, bias)
    np.save(run / TOKENS_FILE, tokens)
    used = np.bincount(tokens, minlength=len(centroids))
    p = used / used.sum()
    log(f"codebook use: {int((used > 0).sum())}/{len(centroids)} entries, perplexity {math.exp(-(p[p > 0] * np.log(p[p > 0])).sum()):.0f}")
    return tokens


def assign_tokens(features: np.ndarray, centroids: torch.Tensor, bias: torch.Tensor | None = None, block: int = 65536) -> np.ndarray:
    """The token of every row, computed in blocks (SpeechTokenizer.quantize's rule)."""
    from unisono.codec.tokenizer import quantize

    out = np.empty(features.shape[0], dtype=np.int16)
    for s in range(0, features.shape[0], block):
        x = torch.from_numpy(np.asarray(features[s:s + block], dtype=np.float32))
        out[s:s + block] = quantize(x, centroids, bias).numpy().astype(np.int16)
    return out


# ---- training loop parts ----------------------------------------------------------------------------

@dataclass
class TrainConfig:
    steps: int = 4000
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    batch: int = 16  # vocoder: segments per step; token2mel: clips per step
    segment_frames: int = 80  # vocoder: mel frames per segment (0.8 s)
    max_tokens: int = 200  # token2mel: longest crop, in tokens (8 s)
    init_from: str | None = None  # a fresh run starts from this checkpoint's weights (fine-tuning), not its step or optimiser
    oversample: tuple[tuple[str, float], ...] = ()  # token2mel and after: (manifest, weight) pairs, see CodecData.draw_weights
    # token2mel and vocoder-gta: weight of the re-encoding loss (0: off). The first `cycle_clips` crops
    # of a batch (their first `cycle_tokens` tokens) are voiced (token2mel: its predicted mels by a frozen
    # vocoder; vocoder-gta: by the vocoder in training) and heard by the tokenizer's frozen encoder; its
    # frames at the token layer (or `cycle_layers`) are pulled towards those of the real audio (see `Reencoder`).
    cycle_weight: float = 0.0
    cycle_vocoder: str | None = None  # token2mel: the frozen vocoder, a checkpoint or codec folder (default: see Token2MelJob._setup_cycle_vocoder)
    cycle_clips: int = 4
    cycle_tokens: int = 100
    cycle_layers: tuple[int, ...] = ()  # the encoder layers heard, distances averaged (default: the token layer)
    # token2mel and after: share of crops whose voice reference is a span of their own clip. A synthetic
    # "speaker" (engine and voice) speaks each clip at its own drawn pitch and rate, so another clip of it
    # tells the model the timbre but not the register it must reproduce.
    self_reference: float = 0.0
    # token2mel and vocoder-gta: weight of the transcript loss (0: off). `transcript_clips` whole clips a step
    # (of at most `transcript_tokens` tokens, default `max_tokens`, in a language the tokenizer's Whisper model
    # reads) are voiced (token2mel: its mels by the frozen vocoder; vocoder-gta: the frozen token-to-mel model's
    # mels by the vocoder in training) and the model's decoder is asked for their text (see `TranscriptLoss`).
    transcript_weight: float = 0.0
    transcript_clips: int = 4
    transcript_tokens: int | None = None
    # the transcript loss's encoder reads each clip in Whisper's padded 30 s window, as a Whisper recogniser
    # does, instead of alone, as the tokenizer does (about six times the encoder's cost)
    transcript_window: bool = False
    # the source manifests whose clips the transcript loss reads (default: every clip with a text). Corpora of
    # real speech are often transcribed in capitals with the numbers spelt out ("RUBOUT G M E F THREE NINE"),
    # which Whisper never writes: on such clips the loss asks the audio for a spelling, not for the words.
    # The loss reads the sources' texts, so a source may give a corpus's clips as the recogniser writes them.
    transcript_sources: tuple[str, ...] = ()
    # token2mel, with the transcript loss: weight of an L1 between the long-term spectrum (log-mel averaged
    # over time) of each transcript clip's resynthesis and of the clip. Being read is free to reshape every
    # frame; this keeps the average, a voice's timbre and its recording's colour, where the clip has it.
    voice_weight: float = 0.0
    # token2mel: weight of an L1 between the spectral envelopes (the first `envelope_cepstra` cepstra of each
    # frame, see `spectral_envelope`) of the predicted and the real mel, beside the mel L1. Splicing the real
    # envelope into a resynthesis gives back the copy synthesis's word errors, the real harmonics nothing
    # (bench/codec_mel_oracle.py): the envelope is where the words are, and the mel L1 spends most of its
    # gradient on a voice's harmonics, which the tokens do not fix.
    envelope_weight: float = 0.0
    envelope_cepstra: int = 12
    # weight of the adversarial term, a least-squares GAN loss and twice its feature matching, as HiFi-GAN
    # weighs them (see `gan`); 0 is off. The discriminator trains beside the model, with its own optimiser,
    # saved in the checkpoint. token2mel: it sees patches of the real and the predicted mels (`mel_discriminator`);
    # vocoder and vocoder-gta: crops of the real and the generated audio (`wave_discriminator`).
    adversarial_weight: float = 0.0
    # where the models train ("cpu", "cuda", "cuda:1"); clips are read and cut on the CPU either way. An exact
    # resume is promised on the CPU: a GPU's own random numbers (dropout) are not in the checkpoint.
    device: str = "cpu"
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        # options of a loss that is off would be ignored without a word
        if self.transcript_sources and not self.transcript_weight:
            raise ValueError("transcript_sources choose the transcript loss's clips: set transcript_weight too")
        if self.voice_weight and not self.transcript_weight:
            raise ValueError("voice_weight is taken on the transcript loss's clips: set transcript_weight too")
        if self.cycle_layers and not self.cycle_weight:
            raise ValueError("cycle_layers are the re-encoding loss's layers: set cycle_weight too")


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def save_state(path: Path, **state: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def load_start(path: Path) -> dict | None:
    """The weights a new run starts from: a job's checkpoint (`run/token2mel.pt`), or an exported
    codec folder (config.json + codec.safetensors, e.g. the shipped model's `speech/`), whose parts
    are offered under the jobs' module names (speaker, token2mel, refiner, vocoder)."""
    from unisono.codec.codec import CONFIG_FILE, SpeechCodec

    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            return None
        codec = SpeechCodec.load(path).float()
        parts = ("speaker", "token2mel", "vocoder") + (("refiner",) if codec.refiner is not None else ())
        return {"modules": {k: getattr(codec, k).state_dict() for k in parts}, "step": None,
                "codebook": (codec.centroids, codec.token_bias)}
    return load_state(path)


def stft_loss(pred: torch.Tensor, target: torch.Tensor, resolutions=((256, 64), (512, 128), (1024, 256))) -> torch.Tensor:
    """Multi-resolution STFT loss: spectral convergence + L1 of log magnitudes, averaged."""
    total = pred.new_zeros(())
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=pred.device)
        P = torch.stft(pred, n_fft, hop, window=window, return_complex=True).abs().clamp(min=1e-5)
        T = torch.stft(target, n_fft, hop, window=window, return_complex=True).abs().clamp(min=1e-5)
        sc = torch.linalg.norm(T - P, dim=(1, 2)) / torch.linalg.norm(T, dim=(1, 2)).clamp(min=1e-5)
        total = total + sc.mean() + F.l1_loss(P.log(), T.log())
    return total / len(resolutions)


class _Job(ABC):
    """Shared loop: resume, AdamW with warm-up + cosine, atomic checkpoints, a JSONL loss log."""

    name = "job"
    STATE_KEYS = ("modules", "opt", "step", "rng", "torch_rng", "codec_config", "train_config")  # as `save` writes them

    def __init__(self, run: Path, codec_config: CodecConfig, cfg: TrainConfig, log: Callable[[str], None]):
        self.run, self.codec_config, self.cfg, self.log = run, codec_config, cfg, log
        run.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        self.device = torch.device(cfg.device)
        self.modules = {k: m.to(self.device) for k, m in self.build().items()}
        params = [p for m in self.modules.values() for p in m.parameters()]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
        self.step = 0
        self.start: dict | None = None  # what a fine-tune started from (`init_from`)
        state = load_state(self.ckpt)
        # what `extra_state` wrote, for the helpers a subclass builds after this (the rest is loaded here)
        self.resumed_extra = {k: v for k, v in (state or {}).items() if k not in self.STATE_KEYS}
        if state is not None:
            # the same command resumes a fine-tune: where it started from, and the re-encoding loss's vocoder
            # (by default that starting folder's), are kept in the checkpoint
            started = state["train_config"]
            kept = {k: started[k] for k in ("init_from", "cycle_vocoder") if getattr(cfg, k) is None and started.get(k)}
            self.cfg = cfg = replace(cfg, **kept)
            for k, m in self.modules.items():
                m.load_state_dict(state["modules"][k])
            self.opt.load_state_dict(state["opt"])
            self.step = int(state["step"])
            self.rng.setstate(state["rng"])
            torch.set_rng_state(state["torch_rng"])
            log(f"{self.name}: resumed at step {self.step}")
        elif cfg.init_from:
            start = load_start(Path(cfg.init_from))
            if start is None:
                raise FileNotFoundError(f"{cfg.init_from} is missing (or is not a codec folder): nothing to start from")
            if not set(self.modules) <= set(start["modules"]):
                raise ValueError(f"{cfg.init_from} holds {sorted(start['modules'])}, not the {self.name} job's {sorted(self.modules)}")
            self.start = start
            for k, m in self.modules.items():
                try:
                    self.load_start_weights(k, m, start["modules"][k])
                except RuntimeError as e:  # torch lists every mismatched tensor; its first lines say enough
                    detail = " ".join(str(e).split())[:300]
                    raise ValueError(f"{cfg.init_from}: its {k} does not fit the shape in {self.run / 'codec.json'} "
                                     f"({detail} ...)") from None
            origin = "an exported codec" if start["step"] is None else f"step {start['step']}"
            log(f"{self.name}: starts from the weights of {cfg.init_from} ({origin})")

    def load_start_weights(self, name: str, module: torch.nn.Module, state: dict) -> None:
        """A fine-tune's starting weights for one module (`init_from`)."""
        module.load_state_dict(state)

    discriminator: torch.nn.Module | None = None  # of the adversarial term, when a job has one

    def _setup_discriminator(self, kind: type[torch.nn.Module], cfg, what: str) -> None:
        """The adversarial term's discriminator (`kind(cfg)`) and its optimiser, as the checkpoint left them."""
        self.disc_cfg = cfg
        with torch.random.fork_rng(devices=[]):  # a resumed job draws the same random numbers as one never stopped
            self.discriminator = kind(cfg).to(self.device)
        self.disc_opt = torch.optim.AdamW(self.discriminator.parameters(), lr=cfg.lr, betas=(0.8, 0.99))
        if "discriminator" in self.resumed_extra:
            self.discriminator.load_state_dict(self.resumed_extra["discriminator"])
            self.disc_opt.load_state_dict(self.resumed_extra["disc_opt"])
        elif self.step:
            self.log(f"{self.name}: the checkpoint holds no discriminator; a new one starts at step {self.step}")
        self.log(f"{self.name}: adversarial term (weight {self.cfg.adversarial_weight}) from {what} "
                 f"of {sum(p.numel() for p in self.discriminator.parameters()):,} parameters")

    def adversarial_loss(self, fake: torch.Tensor, real: torch.Tensor, parts: dict[str, float]) -> torch.Tensor:
        """One step of the discriminator on paired real and generated inputs, then the model's weighted
        adversarial and feature-matching losses against the updated discriminator (figures added to `parts`)."""
        self.disc_opt.zero_grad(set_to_none=True)
        disc = discriminator_loss(self.discriminator, fake, real)
        disc.backward()
        self.disc_opt.step()
        self.discriminator.requires_grad_(False)  # the model's loss reaches the model only
        try:
            adversarial, matching = generator_loss(self.discriminator, fake, real)
        finally:
            self.discriminator.requires_grad_(True)
        parts |= {"disc": float(disc.detach()), "adversarial": float(adversarial.detach()), "feature_match": float(matching.detach())}
        return self.cfg.adversarial_weight * (adversarial + 2.0 * matching)

    def extra_state(self) -> dict:
        """What else a checkpoint must hold for an exact resume (a job's helpers that train beside it);
        read back from `resumed_extra`."""
        if self.discriminator is None:
            return {}
        return {"discriminator": self.discriminator.state_dict(), "disc_opt": self.disc_opt.state_dict()}

    def vocoder_loss(self, pred: torch.Tensor, wave: torch.Tensor, pred_mel: torch.Tensor,
                     mel: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The vocoder jobs' loss of generated audio `pred` against the real `wave` (B, N), given the mel of
        each: mel L1 + 2 x multi-resolution STFT, and the adversarial term when the job has one."""
        mel_loss, spec_loss = F.l1_loss(pred_mel, mel), stft_loss(pred, wave)
        loss, parts = mel_loss + 2.0 * spec_loss, {"mel_l1": float(mel_loss.detach()), "stft": float(spec_loss.detach())}
        if self.discriminator is not None:
            loss = loss + self.adversarial_loss(*self.wave_crops(pred, wave), parts)
        return loss, parts

    def wave_crops(self, fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same random span of the first `WaveDiscriminatorConfig.crops` generated and real waveforms
        (B, N) of equal lengths, scaled alike: the waveform discriminator's input (`window` samples, or all)."""
        fake, real = fake[: self.disc_cfg.crops], real[: self.disc_cfg.crops]
        w = min(self.disc_cfg.window, fake.shape[-1])
        starts = [self.rng.randint(0, fake.shape[-1] - w) for _ in range(fake.shape[0])]
        return normalise_waves(*(torch.stack([x[b, s: s + w] for b, s in enumerate(starts)]) for x in (fake, real)))

    @classmethod
    def ckpt_of(cls, run: Path) -> Path:
        return run / f"{cls.name}.pt"

    @property
    def ckpt(self) -> Path:
        return self.ckpt_of(self.run)

    @abstractmethod
    def build(self) -> dict[str, torch.nn.Module]:
        """The modules this job trains."""

    @abstractmethod
    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """One batch's loss and the figures to log."""

    def save(self) -> None:
        save_state(self.ckpt, modules={k: m.state_dict() for k, m in self.modules.items()}, opt=self.opt.state_dict(),
                   step=self.step, rng=self.rng.getstate(), torch_rng=torch.get_rng_state(),
                   codec_config=self.codec_config.to_dict(), train_config=asdict(self.cfg), **self.extra_state())

    def train(self, until: int | None = None, progress: Callable[[int], None] | None = None) -> None:
        cfg = self.cfg
        until = min(until or cfg.steps, cfg.steps)
        for m in self.modules.values():
            m.train()
        logf = open(self.run / f"{self.name}.jsonl", "a")
        t0, window = time.time(), []
        try:
            while self.step < until:
                for g in self.opt.param_groups:
                    g["lr"] = lr_at(self.step, cfg)
                loss, logs = self.loss()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                grad = torch.nn.utils.clip_grad_norm_([p for m in self.modules.values() for p in m.parameters()], 1.0)
                self.opt.step()
                self.step += 1
                window.append(logs | {"grad_norm": float(grad)})
                if self.step % cfg.log_every == 0:
                    avg = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                    row = {"step": self.step, "lr": lr_at(self.step - 1, cfg), "s_per_step": (time.time() - t0) / len(window)} | avg
                    logf.write(json.dumps(row) + "\n")
                    logf.flush()
                    self.log(f"{self.name} step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step"))
                    t0, window = time.time(), []
                if self.step % cfg.checkpoint_every == 0 or self.step == until:
                    self.save()
                if progress:
                    progress(self.step)
        finally:
            logf.close()


# ---- 2. vocoder ---------------------------------------------------------------------------------

class VocoderJob(_Job):
    name = "vocoder"

    def __init__(self, data: CodecData, run: Path, codec_config: CodecConfig, cfg: TrainConfig, log=print):
        self.data = data
        self.weights = np.array([max(0, c["samples"] - 1) for c in data.clips], dtype=np.float64)
        super().__init__(run, codec_config, cfg, log)
        self.mel = MelSpectrogram(codec_config.mel).to(self.device)
        if cfg.adversarial_weight > 0:
            self._setup_discriminator(WaveDiscriminator, WaveDiscriminatorConfig(), WAVE_DISCRIMINATORS)

    def build(self):
        return {"vocoder": Vocoder(self.codec_config.vocoder, self.codec_config.mel)}

    def batch(self) -> torch.Tensor:
        """(B, segment samples) random segments, drawn in proportion to clip length."""
        n = self.cfg.segment_frames * self.codec_config.mel.hop_length
        out = np.zeros((self.cfg.batch, n), dtype=np.float32)
        rng = np.random.default_rng(self.rng.getrandbits(32))
        for b, i in enumerate(rng.choice(len(self.weights), size=self.cfg.batch, p=self.weights / self.weights.sum())):
            audio = self.data.audio_of(int(i))
            start = int(rng.integers(0, max(1, len(audio) - n)))
            seg = audio[start:start + n]
            out[b, :len(seg)] = seg
        return torch.from_numpy(out)

    def loss(self):
        wave = self.batch().to(self.device)
        mel = self.mel(wave)[..., : self.cfg.segment_frames]  # (B, n_mels, F)
        pred = self.modules["vocoder"](mel)  # (B, F * hop)
        return self.vocoder_loss(pred, wave, self.mel(pred)[..., : self.cfg.segment_frames], mel)


# ---- 3. token -> mel ------------------------------------------------------------------------------

class Reencoder:
    """Audio -> the tokenizer's encoder frames at some of its layers (by default the token layer),
    differentiable with respect to the audio: what the tokenizer hears in a resynthesis. An L1 mel loss averages over
    what the tokens leave open and smears formants; this asks instead that the resynthesis carry the
    features the tokens were taken from (a cycle: tokens -> audio -> the same encoder frames).

    Distances are divided per layer and dimension by the frames' spread on real speech (`fit_scale`),
    so the few very large dimensions of Whisper's residual stream do not outweigh the rest. Layers
    above the token layer hear what the tokens were computed to carry, not the tokens themselves."""

    def __init__(self, encoder: torch.nn.Module, layers: int | tuple[int, ...], device: torch.device | str = "cpu"):
        self.layers = (layers,) if isinstance(layers, int) else tuple(sorted(set(layers)))
        bad = [n for n in self.layers if not 1 <= n <= encoder.config.n_layers]
        if bad or not self.layers:
            raise ValueError(f"layers {bad or '()'}: not among the encoder's layers 1..{encoder.config.n_layers}")
        encoder = copy.deepcopy(encoder)  # a frozen encoder runs without autograd; this copy passes gradients to its input
        encoder.config.variable_length = True  # as the tokenizer runs it
        encoder.config.frozen = False
        self.device = torch.device(device)
        self.encoder = encoder.requires_grad_(False).eval().to(self.device)
        self.scale = torch.ones(len(self.layers), encoder.config.d_model, device=self.device)

    def __call__(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips (N_i,) -> frames (L, B, T50, D) of each layer, zero past each item's end, and (B,) frame counts."""
        from unisono.audio.features import batch_log_mel
        from unisono.codec.tokenizer import encoder_layers

        mel, mel_lengths = batch_log_mel(waves, n_mels=self.encoder.config.n_mels, device=self.device)
        captured, frame_lengths = encoder_layers(self.encoder, mel, mel_lengths, self.layers)
        frames = torch.stack([captured[n] for n in self.layers])
        return frames * length_mask(frame_lengths, frames.shape[2])[..., None], frame_lengths

    @torch.no_grad()
    def fit_scale(self, waves: list[torch.Tensor]) -> None:
        frames, lengths = self(waves)
        for i, layer_frames in enumerate(frames):
            real = torch.cat([f[:n] for f, n in zip(layer_frames, lengths.tolist())])
            self.scale[i] = real.std(0).clamp(min=1e-3 * float(real.std()))

    def distance(self, fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
        """Mean scaled L1 between the frames of paired clips (the real ones without gradient), averaged over the layers."""
        f, lengths = self(fake)
        with torch.no_grad():
            r, _ = self(real)
        n = min(f.shape[2], r.shape[2])
        mask = length_mask(lengths, n)[..., None].float()
        scaled = (f[:, :, :n] - r[:, :, :n]).abs() / self.scale[:, None, None, :]
        return (scaled * mask).sum() / (mask.sum() * f.shape[-1] * len(self.layers))


def _in_capitals(text: str) -> bool:
    """A transcript in capitals ("HE HATES SHOOTING"), as corpora of read speech often write them; not a
    word spelt out as Whisper writes it ("H-O-W-E-L-L."), whose capitals are single letters."""
    letters = [ch for ch in text if ch.isalpha()]
    words = re.findall(r"[^\W\d_]+", text)
    return len(letters) >= 2 and all(ch.isupper() for ch in letters) and any(len(w) >= 2 for w in words)


class TranscriptLoss:
    """Clips and their texts -> the cross-entropy of the tokenizer's Whisper model (its encoder, then its
    decoder fed the text: teacher forcing, no timestamps) reading each text from its clip, differentiable
    with respect to the audio. The re-encoding loss pulls every feature towards the real audio's, the
    ones that tell words apart no more than the rest; this weighs them by what a recogniser needs.

    By default the encoder runs on the clip alone, as the tokenizer runs it (six times cheaper on an 8 s
    clip; the cross-entropy on real clips is a little higher, 1.18 against 1.00 on four training clips).
    With `window` it reads the clip in Whisper's padded 30 s window, as a Whisper recogniser does: the
    decoder then attends to the whole window, padding included. The recogniser that scores the codec is
    this same model, so a codec trained with this loss has to be judged by an independent one as well
    (PocketSphinx)."""

    def __init__(self, source: str, encoder: torch.nn.Module, window: bool = False, device: torch.device | str = "cpu"):
        from tokenizers import Tokenizer
        from transformers import WhisperForConditionalGeneration

        from unisono.model.whisper_source import load_whisper_source, resolve_whisper_source

        config, state = load_whisper_source(source)
        whisper = WhisperForConditionalGeneration(config)
        missing, unexpected = whisper.load_state_dict(state, strict=False)
        if whisper.proj_out.weight is whisper.model.decoder.embed_tokens.weight:
            missing = [k for k in missing if k != "proj_out.weight"]  # tied: loaded as the token embedding
        if missing or unexpected:
            raise ValueError(f"{source}: not a Whisper checkpoint the transcript loss can read: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]} ({len(missing)} missing, {len(unexpected)} unexpected)")
        self.device = torch.device(device)
        self.decoder, self.proj_out = whisper.model.decoder.eval().to(self.device), whisper.proj_out.to(self.device)
        for module in (self.decoder, self.proj_out):
            module.requires_grad_(False)
        encoder = copy.deepcopy(encoder)  # as in Reencoder: gradients must reach the input
        encoder.config.variable_length, encoder.config.frozen = not window, False
        self.encoder = encoder.requires_grad_(False).eval().to(self.device)
        self.window = window
        path, _ = resolve_whisper_source(source)
        tokenizer_file = (path if path.is_dir() else path.parent) / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"the transcript loss needs the Whisper model's tokenizer.json: not in {tokenizer_file.parent}")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.multilingual = config.vocab_size >= 51865  # Whisper's own test
        self.end = self._special("<|endoftext|>")

    def _special(self, token: str) -> int:
        found = self.tokenizer.token_to_id(token)
        if found is None:
            raise ValueError(f"{token} is not in the Whisper model's tokenizer")
        return found

    def reads(self, language: str) -> bool:
        return self.multilingual or language.split("-")[0].lower() == "en"

    def prompt(self, language: str) -> list[int]:
        """What the decoder is given before the text: start, [language, transcribe,] no timestamps."""
        prompt = [self._special("<|startoftranscript|>")]
        if self.multilingual:
            prompt += [self._special(f"<|{language.split('-')[0].lower()}|>"), self._special("<|transcribe|>")]
        return prompt + [self._special("<|notimestamps|>")]

    def token_ids(self, text: str, language: str) -> list[int]:
        """The decoder's whole sequence for a clip: the prompt, the text, the end token."""
        return self.prompt(language) + self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids + [self.end]

    def __call__(self, waves: list[torch.Tensor], texts: list[str], languages: list[str]) -> torch.Tensor:
        """Mean cross-entropy per text token (the end token included) over the clips."""
        from unisono.audio.features import WHISPER_WINDOW_SAMPLES, batch_log_mel

        # in a window the waveform itself is zero-padded to 30 s first, as Whisper's feature extractor does
        mel, mel_lengths = batch_log_mel(waves, n_mels=self.encoder.config.n_mels, device=self.device,
                                         pad_to_samples=WHISPER_WINDOW_SAMPLES if self.window else None)
        frames, frame_lengths = self.encoder(mel, mel_lengths)
        # one clip at a time: Whisper's decoder takes no mask over the frames, so only a window's own padding
        # may reach it (none when the clip is read alone)
        seen = [frames.shape[1] if self.window else int(n) for n in frame_lengths]
        return self._text_cross_entropy([frames[b: b + 1, :n] for b, n in enumerate(seen)], texts, languages)

    def _text_cross_entropy(self, frames: list[torch.Tensor], texts: list[str], languages: list[str]) -> torch.Tensor:
        """The decoder fed each text against its (1, T, D) encoder frames: mean cross-entropy per predicted token."""
        total, count = frames[0].new_zeros(()), 0
        for x, text, language in zip(frames, texts, languages):
            seq = torch.tensor(self.token_ids(text, language), device=x.device)
            n_text = len(seq) - len(self.prompt(language))  # the text and the end token are predicted
            hidden = self.decoder(input_ids=seq[None, :-1], encoder_hidden_states=x).last_hidden_state
            total = total + F.cross_entropy(self.proj_out(hidden[0, -n_text:]), seq[-n_text:], reduction="sum")
            count += n_text
        return total / count

    def read_features(self, features: list[torch.Tensor], layer: int, pool: int, texts: list[str],
                      languages: list[str]) -> torch.Tensor:
        """As `__call__`, from (T25, D) features at the encoder's `layer` instead of audio: each token's
        vector is repeated `pool` times (the encoder's frame rate), the layers after `layer` and the decoder
        read it, the clip alone. Differentiable with respect to the features."""
        w = self.encoder.whisper
        frames = []
        for f in features:
            x = f.repeat_interleave(pool, 0)[None]
            for block in w.layers[layer:]:
                x = block(x, None)
            frames.append(w.layer_norm(x) if layer < len(w.layers) else x)  # the encoder's output had its LayerNorm
        return self._text_cross_entropy(frames, texts, languages)


class Token2MelJob(_Job):
    name = "token2mel"

    def __init__(self, data: CodecData, tokens: np.ndarray, run: Path, codec_config: CodecConfig, cfg: TrainConfig, log=print,
                 encoder: torch.nn.Module | None = None):
        self.data, self.tokens = data, tokens
        total = sum(c["tokens"] for c in data.clips)
        if len(tokens) != total:
            raise ValueError(f"{len(tokens)} tokens for {total} stored frames: fit the tokenizer on this data folder")
        self.by_speaker: dict[str, list[int]] = {}
        for i, c in enumerate(data.clips):
            self.by_speaker.setdefault(c["speaker"], []).append(i)
        self.draw_weights = data.draw_weights(cfg.oversample) if cfg.oversample else None
        super().__init__(run, codec_config, cfg, log)
        self.mel = MelSpectrogram(codec_config.mel)
        self.reencoder, self.cycle_vocoder, self.cycle_source, self.transcript = None, None, None, None
        if self.name == "token2mel" and (cfg.cycle_weight > 0 or cfg.transcript_weight > 0):
            self._setup_cycle_vocoder()
        if cfg.cycle_weight > 0 and self.name in ("token2mel", "vocoder-gta"):
            self._setup_reencoder(encoder)
        if cfg.transcript_weight > 0 and self.name in ("token2mel", "vocoder-gta"):
            self._setup_transcript(encoder)
        if cfg.adversarial_weight > 0 and self.name == "token2mel":
            self._setup_discriminator(MelDiscriminator, MelDiscriminatorConfig(), "a mel discriminator")

    def adversarial_patches(self, pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the mel discriminator compares: paired patches of the batch's predicted and real mels."""
        frames = lengths * self.codec_config.token2mel.upsample
        return normalise(*paired_patches(pred, target, frames, self.disc_cfg.window, self.rng))

    def _setup_cycle_vocoder(self) -> None:
        """The frozen vocoder that voices the predicted mels for the re-encoding loss (`cycle_vocoder`; by
        default the run's vocoder-gta.pt, else vocoder.pt, else that of the codec folder the run starts from)."""
        c = self.codec_config
        if self.cfg.cycle_vocoder:
            sources = [Path(self.cfg.cycle_vocoder)]
        else:
            sources = [self.run / "vocoder-gta.pt", self.run / "vocoder.pt"] + ([Path(self.cfg.init_from)] if self.cfg.init_from else [])
        for source in sources:
            state = load_start(source)
            if state is not None and "vocoder" in state["modules"]:
                break
        else:
            raise FileNotFoundError(f"the re-encoding loss needs a trained vocoder: none in {', '.join(map(str, sources))}")
        self.cycle_vocoder = Vocoder(c.vocoder, c.mel)
        self.cycle_vocoder.load_state_dict(state["modules"]["vocoder"])
        self.cycle_vocoder.eval().requires_grad_(False).to(self.device)
        self.cycle_source = source
        # kept in the checkpoint: a resume hears through this vocoder, even once the run has one of its own
        self.cfg = replace(self.cfg, cycle_vocoder=str(source))

    def _setup_reencoder(self, encoder: torch.nn.Module | None) -> None:
        """The tokenizer's frozen encoder, and the spread of its frames on real audio."""
        from unisono.model.encoder import AudioEncoder

        c = self.codec_config
        if encoder is None:
            encoder = AudioEncoder.from_source(c.tokenizer.encoder_source)
        self.reencoder = Reencoder(encoder, self.cfg.cycle_layers or c.tokenizer.layer, device=self.device)
        # the spread of the encoder's frames on up to 16 clips of real audio (fixed picks: resuming draws the same)
        picks = np.linspace(0, len(self.data) - 1, num=min(16, len(self.data))).astype(int)
        self.reencoder.fit_scale([torch.from_numpy(self.data.audio_of(int(i))[: 8 * 16000]) for i in picks])
        voiced_by = f"the vocoder of {self.cycle_source}" if self.cycle_vocoder is not None else "the vocoder in training"
        self.log(f"{self.name}: re-encoding loss (weight {self.cfg.cycle_weight}) through {voiced_by} "
                 f"and encoder layers {', '.join(map(str, self.reencoder.layers))}")

    def _setup_transcript(self, encoder: torch.nn.Module | None) -> None:
        """The tokenizer's Whisper model as a recogniser, and the clips it can be asked to read."""
        from unisono.model.encoder import AudioEncoder

        source = self.codec_config.tokenizer.encoder_source
        if encoder is None:
            encoder = self.reencoder.encoder if self.reencoder is not None else AudioEncoder.from_source(source)
        self.transcript = TranscriptLoss(source, encoder, window=self.cfg.transcript_window, device=self.device)
        longest = self.cfg.transcript_tokens or self.cfg.max_tokens
        # a source manifest's texts are the ones read: it may spell a clip as the recogniser writes it
        # ("Rubout GMEF 39") where the data folder keeps the corpus's own ("RUBOUT G M E F THREE NINE")
        self.transcript_texts = {i: c["text"] for i, c in enumerate(self.data.clips) if c.get("text")} \
            if not self.cfg.transcript_sources else {}
        for manifest in self.cfg.transcript_sources:
            for i, text in self.data.texts_from(manifest).items():
                self.transcript_texts.setdefault(i, text)
        self.transcript_pool = [i for i, text in sorted(self.transcript_texts.items())
                                if (c := self.data.clips[i])["tokens"] <= longest and text.strip()
                                and self.transcript.reads(c.get("language", "en"))]
        if not self.transcript_pool:
            raise ValueError(f"the transcript loss needs clips with a text, of at most {longest} tokens, "
                             f"in a language {source} reads: none in {self.data.directory}"
                             + (" from the chosen sources" if self.cfg.transcript_sources else ""))
        capitals = sum(1 for i in self.transcript_pool if _in_capitals(self.transcript_texts[i]))
        if capitals:
            self.log(f"{self.name}: warning: {capitals} of the transcript loss's {len(self.transcript_pool)} texts are "
                     "written in capitals, which Whisper does not write; choose the sources it reads with "
                     "--transcript-from")
        voiced_by = f"the vocoder of {self.cycle_source}" if self.cycle_vocoder is not None else "the vocoder in training"
        read = "in 30 s windows" if self.cfg.transcript_window else "alone"
        self.log(f"{self.name}: transcript loss (weight {self.cfg.transcript_weight}) through {voiced_by} "
                 f"and {source}, each clip read {read}, on {len(self.transcript_pool)} of {len(self.data)} clips")

    def build(self):
        c = self.codec_config
        return {
            "speaker": SpeakerEncoder(c.speaker, c.mel.n_mels),
            "token2mel": Token2Mel(c.token2mel, c.tokenizer.codebook_size, c.mel.n_mels, c.speaker.dim),
        }

    def load_start_weights(self, name: str, module: torch.nn.Module, state: dict) -> None:
        """The token-to-mel model may be deeper than the one it starts from (`unisono codec train
        token2mel --depth / --post-depth`): the blocks it lacks start as identities."""
        if name == "token2mel" and isinstance(module, Token2Mel):
            state = self._embedding_for_this_codebook(state)
            blocks, post = module.load_grown_from(state)
            if blocks or post:
                self.log(f"{self.name}: {blocks} blocks and {post} post-net layers added to those of {self.cfg.init_from}, "
                         "starting as identities")
        else:
            module.load_state_dict(state)

    def _embedding_for_this_codebook(self, state: dict) -> dict:
        """A codec folder whose codebook is not the run's (a new one from `unisono codec train-tokenizer`):
        its token embeddings are remapped onto the run's tokens by the frames both tokenize
        (`remap_token_embedding`), so the fine-tune starts near what the old model rendered of the same audio."""
        from safetensors.torch import load_file

        from unisono.train.codec_codebook import remap_token_embedding

        old = (self.start or {}).get("codebook")
        path = self.run / TOKENIZER_FILE
        if old is None or not path.is_file():
            return state
        mine = load_file(str(path))
        centroids, bias = old
        same = centroids.shape == mine["centroids"].shape and (bias is None) == ("bias" not in mine) and \
            torch.allclose(centroids.float(), mine["centroids"].float(), rtol=1e-2, atol=1e-2)
        if same:
            return state
        data = self.data if self.data.features is not None else CodecData(self.data.directory, layer=self.codec_config.tokenizer.layer)
        feats = data.features
        if centroids.shape[1] < feats.shape[1]:  # a mean-only codebook; these features are [mean, difference]
            feats = feats[:, : centroids.shape[1]]
        old_tokens = assign_tokens(feats, centroids, bias)
        embed, agreement = remap_token_embedding(state["embed.weight"], old_tokens, self.tokens,
                                                 self.codec_config.tokenizer.codebook_size)
        self.log(f"{self.name}: {self.cfg.init_from} has another codebook; its token embeddings are remapped onto this run's "
                 f"tokens (a new token's commonest old token covers {100 * agreement:.0f}% of its frames)")
        return state | {"embed.weight": embed}

    def draw_clips(self, n: int, among: list[int] | None = None) -> list[int]:
        """n clip indices (of all clips, or of `among`), uniformly or by the --oversample weights."""
        pool = range(len(self.data)) if among is None else among
        if self.draw_weights is None:
            return [self.rng.choice(pool) for _ in range(n)]
        return self.rng.choices(pool, weights=[self.draw_weights[i] for i in pool], k=n)

    def _reference(self, i: int, seconds: float = 4.0) -> np.ndarray:
        """Up to 4 s of another clip of the same speaker (the clip itself if it is the only one, or
        for a `self_reference` share of the crops)."""
        same = self.by_speaker[self.data.clips[i]["speaker"]]
        if self.cfg.self_reference and self.rng.random() < self.cfg.self_reference:
            j = i
        else:
            j = self.rng.choice([k for k in same if k != i] or [i])
        audio = self.data.audio_of(j)
        n = min(len(audio), int(seconds * 16000))
        start = self.rng.randint(0, len(audio) - n)
        return audio[start:start + n]

    def batch(self, equal_length: bool = False):
        """Random crops of random clips: tokens (B, T), lengths (B,), their real mel (B, n_mels, 4T),
        a reference mel of the same voice (B, n_mels, R) with lengths (B,), and the crops' audio
        (B, 640 T). With `equal_length` every crop has the length of the shortest."""
        cfg, spt = self.cfg, self.codec_config.tokenizer.samples_per_token
        up, floor = self.codec_config.token2mel.upsample, math.log(self.codec_config.mel.log_floor)
        idx = self.draw_clips(cfg.batch)
        shortest = min(self.data.clips[i]["tokens"] for i in idx)
        crops = []
        for i in idx:
            c = self.data.clips[i]
            n = min(shortest if equal_length else c["tokens"], cfg.max_tokens)
            a = self.rng.randint(0, c["tokens"] - n)
            crops.append((i, a, n))
        T = max(n for _, _, n in crops)
        tokens = torch.zeros(len(crops), T, dtype=torch.long)
        target = torch.full((len(crops), self.codec_config.mel.n_mels, up * T), floor)
        waves = torch.zeros(len(crops), spt * T)
        lengths = torch.tensor([n for _, _, n in crops])
        for b, (i, a, n) in enumerate(crops):
            c = self.data.clips[i]
            tokens[b, :n] = self._tokens_of(c, a, n)
            audio = torch.from_numpy(self.data.audio_of(i)[a * spt: (a + n) * spt])
            waves[b, : len(audio)] = audio
            m = self.mel(audio)[:, : up * n]
            target[b, :, : m.shape[-1]] = m
        ref_mel, ref_len = self._reference_mels([i for i, _, _ in crops])
        return tokens, lengths, target, ref_mel, ref_len, waves

    def predict_mel(self, tokens: torch.Tensor, ref_mel: torch.Tensor, ref_len: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, 4T) mels of the model in training, voiced by the references."""
        return self.modules["token2mel"](tokens, self.modules["speaker"](ref_mel, ref_len), lengths)

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """(1, n_mels, F) mel -> (1, samples) audio for the losses that listen: the frozen vocoder."""
        return self.cycle_vocoder(mel)

    def _tokens_of(self, clip: dict, start: int, n: int) -> torch.Tensor:
        """Tokens start..start+n of a stored clip, as int64."""
        offset = clip["feature_offset"] + start
        return torch.from_numpy(self.tokens[offset: offset + n].astype(np.int64))

    def _reference_mels(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The voice references of clips `idx` (see `_reference`): mels (B, n_mels, R) and their lengths (B,)."""
        refs = [self._reference(i) for i in idx]
        ref = torch.zeros(len(refs), max(len(r) for r in refs))
        for b, r in enumerate(refs):
            ref[b, : len(r)] = torch.from_numpy(r)
        return self.mel(ref), torch.tensor([len(r) // self.codec_config.mel.hop_length + 1 for r in refs])

    def transcript_loss(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Whole clips of the transcript pool, resynthesised (voice as in `batch`) and read back against their
        texts; and, with a `voice_weight`, the L1 between the long-term spectra of the resyntheses' mels and
        the clips' own (else None)."""
        up, spt = self.codec_config.token2mel.upsample, self.codec_config.tokenizer.samples_per_token
        idx = self.draw_clips(self.cfg.transcript_clips, among=self.transcript_pool)
        clips = [self.data.clips[i] for i in idx]
        T = max(c["tokens"] for c in clips)
        tokens = torch.zeros(len(idx), T, dtype=torch.long)
        for b, c in enumerate(clips):
            tokens[b, : c["tokens"]] = self._tokens_of(c, 0, c["tokens"])
        lengths = torch.tensor([c["tokens"] for c in clips])
        pred = self.predict_mel(tokens, *self._reference_mels(idx), lengths)
        fake = [self.vocode(pred[b: b + 1, :, : up * c["tokens"]])[0] for b, c in enumerate(clips)]
        transcript = self.transcript(fake, [self.transcript_texts[i] for i in idx], [c.get("language", "en") for c in clips])
        if not self.cfg.voice_weight:
            return transcript, None
        spectrum = pred.new_zeros(())
        for b, (i, c) in enumerate(zip(idx, clips)):
            real = self.mel(torch.from_numpy(self.data.audio_of(i)[: spt * c["tokens"]]))[:, : up * c["tokens"]]
            spectrum = spectrum + (pred[b, :, : real.shape[-1]].mean(-1) - real.mean(-1)).abs().mean()
        return transcript, spectrum / len(clips)

    def loss(self):
        tokens, lengths, target, ref_mel, ref_len, waves = (t.to(self.device) for t in self.batch())
        pred = self.predict_mel(tokens, ref_mel, ref_len, lengths)  # (B, n_mels, 4T)
        up = self.codec_config.token2mel.upsample
        mask = length_mask(lengths * up, pred.shape[-1])[:, None, :].float()  # (B, 1, 4T)
        l1 = ((pred - target).abs() * mask).sum() / (mask.sum() * pred.shape[1])
        total, parts = l1, {"mel_l1": float(l1.detach())}
        if self.cfg.envelope_weight:
            n = self.cfg.envelope_cepstra
            # the envelope is a linear projection: that of the difference is the difference of the envelopes
            env = (spectral_envelope(pred - target, n).abs() * mask).sum() / (mask.sum() * pred.shape[1])
            total, parts["envelope"] = total + self.cfg.envelope_weight * env, float(env.detach())
        if self.discriminator is not None:
            total = total + self.adversarial_loss(*self.adversarial_patches(pred, target, lengths), parts)
        if self.reencoder is not None:
            spt = self.codec_config.tokenizer.samples_per_token
            n = lengths[: self.cfg.cycle_clips].clamp(max=self.cfg.cycle_tokens).tolist()
            # one clip at a time through the vocoder: no padding reaches the audio that is compared
            fake = [self.vocode(pred[b: b + 1, :, : up * k])[0] for b, k in enumerate(n)]
            real = [waves[b, : spt * k] for b, k in enumerate(n)]
            cycle = self.reencoder.distance(fake, real)
            total, parts["cycle"] = total + self.cfg.cycle_weight * cycle, float(cycle.detach())
        if self.transcript is not None:
            transcript, voice = self.transcript_loss()
            total, parts["transcript"] = total + self.cfg.transcript_weight * transcript, float(transcript.detach())
            if voice is not None:
                total, parts["voice"] = total + self.cfg.voice_weight * voice, float(voice.detach())
        return total, parts


def load_frozen_token2mel(run: Path, c: CodecConfig, device: str = "cpu") -> tuple[SpeakerEncoder, Token2Mel]:
    """The run's trained speaker encoder and token-to-mel model, in eval mode, without gradients, on `device`."""
    t2m = load_state(run / "token2mel.pt")
    if t2m is None:
        raise FileNotFoundError(f"{run / 'token2mel.pt'} is missing: train the token-to-mel model first")
    speaker = SpeakerEncoder(c.speaker, c.mel.n_mels)
    token2mel = Token2Mel(c.token2mel, c.tokenizer.codebook_size, c.mel.n_mels, c.speaker.dim)
    speaker.load_state_dict(t2m["modules"]["speaker"])
    token2mel.load_state_dict(t2m["modules"]["token2mel"])
    for m in (speaker, token2mel):
        m.eval().requires_grad_(False).to(device)
    return speaker, token2mel


def load_frozen_refiner(run: Path, c: CodecConfig, device: str = "cpu") -> MelRefiner:
    """The run's trained refiner, in eval mode, without gradients, on `device`."""
    state = load_state(run / "refiner.pt")
    if state is None:
        raise FileNotFoundError(f"{run / 'refiner.pt'} is missing: the codec config has a refiner; train it first")
    refiner = MelRefiner(c.refiner, c.mel.n_mels, c.speaker.dim)
    refiner.load_state_dict(state["modules"]["refiner"])
    return refiner.eval().requires_grad_(False).to(device)


class RefinerJob(Token2MelJob):
    """The same batches as the token-to-mel job; the token-to-mel model and speaker encoder of the
    run are loaded and frozen, only the refiner trains."""

    name = "refiner"

    def __init__(self, data: CodecData, tokens: np.ndarray, run: Path, codec_config: CodecConfig, cfg: TrainConfig, log=print):
        if codec_config.refiner is None:
            raise ValueError("the codec config has no refiner section")
        self.speaker, self.token2mel = load_frozen_token2mel(run, codec_config, cfg.device)
        super().__init__(data, tokens, run, codec_config, cfg, log)

    def build(self):
        c = self.codec_config
        return {"refiner": MelRefiner(c.refiner, c.mel.n_mels, c.speaker.dim)}

    def loss(self):
        tokens, lengths, target, ref_mel, ref_len, _ = (t.to(self.device) for t in self.batch())
        with torch.no_grad():
            spk = self.speaker(ref_mel, ref_len)
            mu = self.token2mel(tokens, spk, lengths)
        up = self.codec_config.token2mel.upsample
        mask = length_mask(lengths * up, mu.shape[-1])[:, None, :].float()
        fm = self.modules["refiner"].loss(mu, target, spk, mask)
        return fm, {"flow": float(fm.detach())}


class VocoderGtaJob(Token2MelJob):
    """Fine-tunes the run's vocoder on the mels the detokenizer will actually give it (token-to-mel,
    then the refiner when the codec has one), against the real audio those tokens came from:
    "ground-truth-aligned" fine-tuning, as Tacotron 2 and HiFi-GAN do for predicted mels. The
    tokens are frame-aligned with the audio, so no alignment is needed. Starts from vocoder.pt.
    With `cycle_weight` the re-encoding loss reaches the vocoder too: what it makes of a predicted
    mel should be heard by the tokenizer's encoder as the real audio is."""

    name = "vocoder-gta"

    def __init__(self, data: CodecData, tokens: np.ndarray, run: Path, codec_config: CodecConfig, cfg: TrainConfig, log=print,
                 encoder: torch.nn.Module | None = None):
        self.speaker, self.token2mel = load_frozen_token2mel(run, codec_config, cfg.device)
        self.refiner = load_frozen_refiner(run, codec_config, cfg.device) if codec_config.refiner is not None else None
        if not cfg.init_from:  # a new run starts from the vocoder trained on real mels
            if not (run / "vocoder.pt").is_file() and not self.ckpt_of(run).is_file():
                raise FileNotFoundError(f"{run / 'vocoder.pt'} is missing: train the vocoder on real mels first")
            cfg = replace(cfg, init_from=str(run / "vocoder.pt"))
        super().__init__(data, tokens, run, codec_config, cfg, log, encoder=encoder)
        self.listen = MelSpectrogram(codec_config.mel).to(self.device)  # the mel of what the vocoder makes
        if cfg.adversarial_weight > 0:
            self._setup_discriminator(WaveDiscriminator, WaveDiscriminatorConfig(), WAVE_DISCRIMINATORS)

    def build(self):
        return {"vocoder": Vocoder(self.codec_config.vocoder, self.codec_config.mel)}

    @torch.no_grad()
    def predict_mel(self, tokens, ref_mel, ref_len, lengths):
        """The frozen detokenizer's mels (token-to-mel, then the refiner when the codec has one)."""
        spk = self.speaker(ref_mel, ref_len)
        mel = self.token2mel(tokens, spk, lengths)
        return self.refiner(mel, spk) if self.refiner is not None else mel

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        return self.modules["vocoder"](mel)

    def loss(self):
        tokens, lengths, target, ref_mel, ref_len, wave = (t.to(self.device) for t in self.batch(equal_length=True))
        pred = self.vocode(self.predict_mel(tokens, ref_mel, ref_len, lengths))  # (B, 640 T)
        loss, parts = self.vocoder_loss(pred, wave, self.listen(pred)[..., : target.shape[-1]], target)
        if self.reencoder is not None:
            k = self.codec_config.tokenizer.samples_per_token * min(int(lengths[0]), self.cfg.cycle_tokens)  # crops are of equal length
            cycle = self.reencoder.distance(list(pred[: self.cfg.cycle_clips, :k]), list(wave[: self.cfg.cycle_clips, :k]))
            loss, parts["cycle"] = loss + self.cfg.cycle_weight * cycle, float(cycle.detach())
        if self.transcript is not None:  # the vocoder learns to voice the frozen mels so that their words are heard
            transcript, _ = self.transcript_loss()
            loss, parts["transcript"] = loss + self.cfg.transcript_weight * transcript, float(transcript.detach())
        return loss, parts


def export_codec(run: Path, out: Path, codec_config: CodecConfig, vocoder: str = "vocoder") -> Path:
    """Gather the trained parts of a run into a SpeechCodec folder (float16 safetensors);
    `vocoder` names the vocoder checkpoint: "vocoder" (trained on real mels) or "vocoder-gta", or is
    an exported codec folder whose vocoder is taken."""
    from safetensors.torch import load_file

    from unisono.codec.codec import SpeechCodec

    codebook = load_file(str(run / TOKENIZER_FILE))
    codec = SpeechCodec(codec_config, centroids=codebook["centroids"], token_bias=codebook.get("bias"))
    source = Path(vocoder) if Path(vocoder).is_dir() else run / f"{vocoder}.pt"
    voc = load_start(source)
    if voc is None:
        raise FileNotFoundError(f"{source} is missing: train the vocoder first")
    codec.vocoder.load_state_dict(voc["modules"]["vocoder"])
    codec.speaker, codec.token2mel = load_frozen_token2mel(run, codec_config)
    if codec_config.refiner is not None:
        codec.refiner = load_frozen_refiner(run, codec_config)
    return codec.save(out)
