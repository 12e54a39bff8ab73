"""The codec's training jobs, as objectives of the one Trainer (`unisono.train.trainer`): the loop,
the warm-up + cosine schedule, checkpoints, exact resume and logging are the backbone's.

    vocoder       mel -> waveform on random 0.8 s segments of real mels. Loss: L1 between log-mels
                  + 2 x multi-resolution STFT loss (spectral convergence + log-magnitude L1), as in
                  Parallel WaveGAN (Yamamoto et al. 2020).
    token2mel     tokens + a voice -> mel. The voice is another clip of the same speaker (or, for a
                  `self_reference` share of the crops, a span of the clip itself: its own pitch register),
                  so the model takes timbre from the reference and words from the tokens. Loss: L1 between
                  log-mels, and the listening terms: re-encoding (the tokenizer's encoder hears the
                  resynthesis as it heard the clip), transcript (its Whisper decoder reads the clip's text
                  back from the resynthesis) and voice (the resynthesis keeps the clip's long-term spectrum).
                  They hear the predicted mels through a frozen vocoder.
    vocoder-gta   the vocoder fine-tuned on the frozen token-to-mel model's own mels against the real audio
                  of the same tokens ("ground-truth-aligned", as Tacotron 2 and HiFi-GAN do; the tokens are
                  frame-aligned with the audio), with the vocoder's loss and an optional adversarial term
                  (multi-period and multi-resolution waveform discriminators, `wave_discriminator`).

A codec run folder holds what the jobs share, and one Trainer run folder per job:

    RUN/
      codec.json, tokenizer.safetensors, tokens.npy     (unisono.train.codec_kmeans)
      vocoder/  token2mel/  vocoder-gta/                 config.yaml, metrics.jsonl, tb/, checkpoints/,
                                                         model/weights.safetensors (the job's result)

A job starts from fresh weights, from the run's earlier jobs (vocoder-gta: the run's vocoder), or from
`init_from`: an exported codec folder (e.g. the shipped model's speech/; a token-to-mel model whose
codebook is not the run's has its token embeddings remapped onto the run's tokens) or another run's job
folder. Batches are drawn from the data folder as a pure function of (seed, micro-batch index).
"""

from __future__ import annotations

from abc import abstractmethod

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unisono.codec.config import CodecConfig
from unisono.codec.mel import MelSpectrogram
from unisono.codec.token2mel import SpeakerEncoder, Token2Mel, length_mask
from unisono.codec.vocoder import Vocoder
from unisono.train.codec_data import CodecData
from unisono.train.config import OptimConfig, PhaseConfig, RunConfig
from unisono.train.trainer import Objective

JOBS = ("vocoder", "token2mel", "vocoder-gta")
RESULT = Path("model") / "weights.safetensors"  # a job's result, in its run folder
REFERENCE_SECONDS = 4.0  # of a voice reference


@dataclass
class CodecJobConfig:
    """One job of a codec run (what `unisono train codec JOB` sets)."""

    job: str
    data: str  # a prepared data folder (unisono.train.codec_data)
    run: str  # the codec run folder; the job trains in RUN/<job>
    steps: int = 4000
    lr: float = 1e-3
    warmup: int = 200
    batch: int = 16  # vocoder: segments a step; token2mel, vocoder-gta: crops a step
    segment_frames: int = 80  # vocoder: mel frames of a segment (0.8 s)
    max_tokens: int = 200  # token2mel, vocoder-gta: longest crop, in tokens (8 s); and longest transcript clip
    init_from: str | None = None  # a codec folder or a job folder whose weights a new run starts from
    oversample: list[tuple[str, float]] = field(default_factory=list)  # (manifest, weight): CodecData.draw_weights
    self_reference: float = 0.0  # share of crops whose voice reference is a span of their own clip
    # token2mel's listening terms (0: off), each heard through the frozen vocoder:
    cycle_weight: float = 0.0  # re-encoding; on the first `cycle_tokens` tokens of the first `cycle_clips` crops
    cycle_clips: int = 4
    cycle_tokens: int = 100
    transcript_weight: float = 0.0  # on `transcript_clips` whole clips a step
    transcript_clips: int = 4
    transcript_from: list[str] = field(default_factory=list)  # source manifests whose clips and texts it reads
    voice_weight: float = 0.0  # the long-term spectra of the transcript clips' resyntheses and of the clips
    adversarial_weight: float = 0.0  # vocoder-gta: a least-squares GAN loss + twice its feature matching
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"  # "cuda": the models and every loss there; clips are read and cut on the CPU
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if self.job not in JOBS:
            raise ValueError(f"job {self.job!r}; choose {', '.join(JOBS)}")
        listening = {"cycle_weight": self.cycle_weight, "transcript_weight": self.transcript_weight}
        if self.job != "token2mel" and any(listening.values()):
            raise ValueError("the re-encoding and transcript losses train the token-to-mel model only")
        if self.adversarial_weight and self.job != "vocoder-gta":
            raise ValueError("the adversarial term trains the vocoder-gta fine-tune only")
        if (self.transcript_from or self.voice_weight) and not self.transcript_weight:
            raise ValueError("transcript_from and voice_weight are options of the transcript loss: give --transcript-weight too")
        if self.self_reference and self.job == "vocoder":
            raise ValueError("the vocoder hears no voice reference")

    def stage(self) -> "CodecStage":
        """What the Trainer runs: one phase, every parameter of the job's model, warm-up then cosine
        decay to 5% of the peak; AdamW (0.9, 0.98), all parameters decayed; float32."""
        phase = PhaseConfig(name=self.job, steps=self.steps, trainable=["*"], lr=self.lr, warmup_steps=self.warmup,
                            schedule="cosine", min_lr_ratio=0.05)
        run = RunConfig(seed=self.seed, precision="fp32", checkpoint_every=self.checkpoint_every, threads=self.threads,
                        device="cuda" if self.device.startswith("cuda") else "cpu")
        return CodecStage(self.job, self, OptimConfig(betas=(0.9, 0.98), weight_decay=0.01), run, [phase])


@dataclass
class CodecStage:
    """A codec job as the Trainer reads a stage."""

    stage: str
    job: CodecJobConfig
    optim: OptimConfig
    run: RunConfig
    phases: list[PhaseConfig]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- weights on disk ----------------------------------------------------------------------------

def job_dir(run: str | Path, job: str) -> Path:
    return Path(run) / job


def read_modules(path: str | Path) -> dict[str, dict[str, torch.Tensor]] | None:
    """Module name -> state dict: of an exported codec folder (speaker, token2mel, vocoder), or of a
    job's result (a job folder, or its model/ folder); None where neither is."""
    from safetensors.torch import load_file

    from unisono.codec.codec import CONFIG_FILE, SpeechCodec

    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        codec = SpeechCodec.load(path).float()
        return {k: getattr(codec, k).state_dict() for k in ("speaker", "token2mel", "vocoder")}
    for weights in (path / RESULT, path / RESULT.name):
        if weights.is_file():
            modules: dict[str, dict[str, torch.Tensor]] = {}
            for key, value in load_file(str(weights)).items():
                name, _, rest = key.partition(".")
                modules.setdefault(name, {})[rest] = value
            return modules
    return None


def codebook_of(path: str | Path) -> torch.Tensor | None:
    """The centroids of an exported codec folder (None for a job folder: it shares its run's)."""
    from unisono.codec.codec import CONFIG_FILE

    if not (Path(path) / CONFIG_FILE).is_file():
        return None
    from unisono.codec.codebook import read_codebook

    return read_codebook(path).centroids


def frozen(module: nn.Module, device: torch.device) -> nn.Module:
    return module.eval().requires_grad_(False).to(device)


# ---- batches ------------------------------------------------------------------------------------

class CodecBatch(dict):
    """A micro-batch: tensors (moved by `to`) and plain values (texts, a seed)."""

    def to(self, device: torch.device) -> "CodecBatch":
        return CodecBatch({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


class CodecStream:
    """Micro-batch g is `draw(rng)` with rng seeded by (seed, g): the same batch in every run."""

    def __init__(self, draw: Callable[[np.random.Generator], CodecBatch], seed: int):
        self.draw, self.seed = draw, seed

    def batches(self, start: int, stride: int) -> Iterator[CodecBatch]:
        return (self.draw(np.random.default_rng([self.seed, g])) for g in itertools.count(start, stride))

    def position(self, g: int) -> dict[str, Any]:
        return {}

    def counters(self) -> dict[str, Any]:
        return {}


# ---- the jobs -----------------------------------------------------------------------------------

class CodecObjective(Objective):
    """What the jobs share: the data folder, the codec's settings, the starting weights, the result."""

    name = ""

    def __init__(self, cfg: CodecJobConfig, codec: CodecConfig, log: Callable[[str], None] = print,
                 encoder: nn.Module | None = None):
        self.cfg, self.codec, self.log = cfg, codec, log
        self.run = Path(cfg.run)
        self.data = CodecData(cfg.data)
        self.encoder = encoder  # the tokenizer's Whisper encoder, when the caller has it loaded already
        self.device = torch.device("cpu")
        self.mel = MelSpectrogram(codec.mel)
        self.draw_weights = self.data.draw_weights(cfg.oversample) if cfg.oversample else None

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        ...

    def default_start(self) -> Path | None:
        """Where a new run starts from without init_from (None: fresh weights)."""
        return None

    def build(self, run: Path, device: torch.device) -> nn.Module:
        self.device = device
        torch.manual_seed(self.cfg.seed)
        model = nn.ModuleDict(self.modules())
        source = Path(self.cfg.init_from) if self.cfg.init_from else self.default_start()
        if source is not None:
            start = read_modules(source)
            if start is None:
                raise FileNotFoundError(f"{source} holds neither a codec (config.json) nor a trained job: nothing to start from")
            if not set(model) <= set(start):
                raise ValueError(f"{source} holds {sorted(start)}, not the {self.name} job's {sorted(model)}")
            for name, module in model.items():
                try:
                    module.load_state_dict(self.start_weights(name, start[name], source))
                except RuntimeError as e:  # torch lists every mismatched tensor; its first lines say enough
                    detail = " ".join(str(e).split())[:300]
                    raise ValueError(f"{source}: its {name} does not fit the shape in {self.run / 'codec.json'} ({detail} ...)") from None
            self.log(f"{self.name}: starts from the weights of {source}")
        self.mel = self.mel.to(device)
        self.setup(device)
        return model

    def start_weights(self, name: str, state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
        return state

    def setup(self, device: torch.device) -> None:
        """The helpers the loss needs, on `device`."""

    def stream(self, model, phase_index: int, phase: PhaseConfig, seed: int) -> CodecStream:
        return CodecStream(self.draw, seed)

    @abstractmethod
    def draw(self, rng: np.random.Generator) -> CodecBatch:
        ...

    def export(self, model_state: dict[str, torch.Tensor], run: Path, processes: int) -> Path:
        from safetensors.torch import save_file

        path = run / RESULT
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.float().contiguous() for k, v in model_state.items()}, str(path))
        return path.parent

    def draw_clips(self, rng: np.random.Generator, n: int, among: list[int] | None = None) -> list[int]:
        """n clip indices (of all clips, or of `among`), uniformly or by the oversampling weights."""
        pool = np.arange(len(self.data)) if among is None else np.asarray(among)
        p = None
        if self.draw_weights is not None:
            w = self.draw_weights[pool]
            p = w / w.sum()
        return [int(i) for i in rng.choice(pool, size=n, p=p)]


class VocoderLoss:
    """The vocoders' loss of generated audio against the real (B, N), given the mel of each: mel L1 +
    2 x multi-resolution STFT, and the adversarial term when it is on (its discriminator and optimiser
    train beside the vocoder and are saved in the checkpoint)."""

    def __init__(self, weight: float, device: torch.device):
        from unisono.train.wave_discriminator import WaveDiscriminator, WaveDiscriminatorConfig

        self.weight, self.disc = weight, None
        if weight > 0:
            self.disc_cfg = WaveDiscriminatorConfig()
            self.disc = WaveDiscriminator(self.disc_cfg).to(device)
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=self.disc_cfg.lr, betas=(0.8, 0.99))

    def __call__(self, pred: torch.Tensor, wave: torch.Tensor, pred_mel: torch.Tensor, mel: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        from unisono.train.codec_losses import stft_loss

        mel_loss, spec_loss = F.l1_loss(pred_mel, mel), stft_loss(pred, wave)
        loss, parts = mel_loss + 2.0 * spec_loss, {"mel_l1": float(mel_loss.detach()), "stft": float(spec_loss.detach())}
        if self.disc is not None:
            loss = loss + self.adversarial(*self.crops(pred, wave, rng), parts)
        return loss, parts

    def crops(self, fake: torch.Tensor, real: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The same random span of the first `crops` generated and real waveforms, scaled alike."""
        from unisono.train.wave_discriminator import normalise

        fake, real = fake[: self.disc_cfg.crops], real[: self.disc_cfg.crops]
        w = min(self.disc_cfg.window, fake.shape[-1])
        starts = rng.integers(0, fake.shape[-1] - w + 1, size=fake.shape[0])
        return normalise(*(torch.stack([x[b, s: s + w] for b, s in enumerate(starts)]) for x in (fake, real)))

    def adversarial(self, fake: torch.Tensor, real: torch.Tensor, parts: dict[str, float]) -> torch.Tensor:
        """One step of the discriminator, then the model's weighted adversarial and feature-matching
        losses against the updated discriminator."""
        from unisono.train.gan import discriminator_loss, generator_loss

        self.disc_opt.zero_grad(set_to_none=True)
        disc = discriminator_loss(self.disc, fake, real)
        disc.backward()
        self.disc_opt.step()
        self.disc.requires_grad_(False)  # the model's loss reaches the model only
        try:
            adversarial, matching = generator_loss(self.disc, fake, real)
        finally:
            self.disc.requires_grad_(True)
        parts |= {"disc": float(disc.detach()), "adversarial": float(adversarial.detach()), "feature_match": float(matching.detach())}
        return self.weight * (adversarial + 2.0 * matching)

    def state(self) -> dict[str, Any]:
        return {} if self.disc is None else {"discriminator": self.disc.state_dict(), "disc_opt": self.disc_opt.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        if self.disc is not None and "discriminator" in state:
            self.disc.load_state_dict(state["discriminator"])
            self.disc_opt.load_state_dict(state["disc_opt"])


class VocoderObjective(CodecObjective):
    name = "vocoder"

    def modules(self) -> dict[str, nn.Module]:
        return {"vocoder": Vocoder(self.codec.vocoder, self.codec.mel)}

    def setup(self, device: torch.device) -> None:
        self.vocoder_loss = VocoderLoss(self.cfg.adversarial_weight, device)

    def draw(self, rng: np.random.Generator) -> CodecBatch:
        """(B, segment samples) random segments, drawn in proportion to clip length."""
        n = self.cfg.segment_frames * self.codec.mel.hop_length
        lengths = np.array([max(0, c["samples"] - 1) for c in self.data.clips], dtype=np.float64)
        out = np.zeros((self.cfg.batch, n), dtype=np.float32)
        for b, i in enumerate(rng.choice(len(lengths), size=self.cfg.batch, p=lengths / lengths.sum())):
            audio = self.data.audio_of(int(i))
            start = int(rng.integers(0, max(1, len(audio) - n)))
            seg = audio[start:start + n]
            out[b, :len(seg)] = seg
        return CodecBatch(wave=torch.from_numpy(out), seed=int(rng.integers(2**62)))

    def loss(self, model, batch: CodecBatch, phase: PhaseConfig):
        frames = self.cfg.segment_frames
        mel = self.mel(batch["wave"])[..., :frames]  # (B, n_mels, F)
        pred = model["vocoder"](mel)  # (B, F * hop)
        loss, parts = self.vocoder_loss(pred, batch["wave"], self.mel(pred)[..., :frames], mel,
                                        np.random.default_rng(batch["seed"]))
        return loss, {"loss": float(loss.detach()), **parts}

    def extra_state(self) -> dict[str, Any]:
        return self.vocoder_loss.state()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.vocoder_loss.load(state)


class Token2MelObjective(CodecObjective):
    name = "token2mel"

    def __init__(self, cfg: CodecJobConfig, codec: CodecConfig, log: Callable[[str], None] = print,
                 encoder: nn.Module | None = None):
        from unisono.train.codec_kmeans import TOKENS_FILE

        super().__init__(cfg, codec, log, encoder)
        path = self.run / TOKENS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: fit the tokenizer on the data folder first (`unisono train codec fit-tokenizer`)")
        self.tokens = np.load(path)
        if len(self.tokens) != self.data.total_tokens:
            raise ValueError(f"{len(self.tokens)} tokens for {self.data.total_tokens} stored frames: fit the tokenizer on this data folder")
        self.by_speaker: dict[str, list[int]] = {}
        for i, c in enumerate(self.data.clips):
            self.by_speaker.setdefault(c["speaker"], []).append(i)
        self.reencoder = self.transcript = self.listening_vocoder = None
        self.listening_source: Path | None = None
        if cfg.transcript_weight:
            self.transcript_texts = self._transcript_texts()

    def modules(self) -> dict[str, nn.Module]:
        c = self.codec
        return {"speaker": SpeakerEncoder(c.speaker, c.mel.n_mels),
                "token2mel": Token2Mel(c.token2mel, c.tokenizer.codebook_size, c.mel.n_mels, c.speaker.dim)}

    # -- the starting weights: a codec of another codebook has its token embeddings remapped -------------------
    def start_weights(self, name: str, state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
        if name != "token2mel":
            return state
        from unisono.codec.codebook import assign_tokens
        from unisono.codec.codebook import read_codebook as read_run_codebook
        from unisono.train.model_setup import remap_token_embedding

        old = codebook_of(source)
        if old is None:
            return state
        mine = read_run_codebook(self.run).centroids
        if old.shape == mine.shape and torch.allclose(old, mine, rtol=1e-2, atol=1e-2):
            return state
        data = CodecData(self.cfg.data, layer=self.codec.tokenizer.layer)
        embed, agreement = remap_token_embedding(state["embed.weight"], assign_tokens(data.features, old), self.tokens,
                                                 self.codec.tokenizer.codebook_size)
        self.log(f"{self.name}: {source} has another codebook; its token embeddings are remapped onto this run's tokens "
                 f"(a new token's commonest old token covers {100 * agreement:.0f}% of its frames)")
        return state | {"embed.weight": embed}

    # -- the listening terms -------------------------------------------------------------------------------------
    def setup(self, device: torch.device) -> None:
        cfg = self.cfg
        if not (cfg.cycle_weight or cfg.transcript_weight):
            return
        self._listen_through(self._listening_source(), device)
        encoder = self.encoder
        if encoder is None:
            from unisono.model.encoder import AudioEncoder

            encoder = AudioEncoder.from_source(self.codec.tokenizer.encoder_source)
        heard = f"the vocoder of {self.listening_source}"
        if cfg.cycle_weight:
            from unisono.train.codec_losses import Reencoder

            self.reencoder = Reencoder(encoder, self.codec.tokenizer.layer, device=device)
            # the spread of the encoder's frames on up to 16 clips of real audio (fixed picks: a resume takes the same)
            picks = np.linspace(0, len(self.data) - 1, num=min(16, len(self.data))).astype(int)
            self.reencoder.fit_scale([torch.from_numpy(self.data.audio_of(int(i))[: 8 * 16000]) for i in picks])
            self.log(f"{self.name}: re-encoding loss (weight {cfg.cycle_weight}) through {heard}")
        if cfg.transcript_weight:
            from unisono.train.codec_losses import TranscriptLoss, in_capitals

            source = self.codec.tokenizer.encoder_source
            self.transcript = TranscriptLoss(source, encoder, device=device)
            self.transcript_pool = [i for i, text in sorted(self.transcript_texts.items())
                                    if (c := self.data.clips[i])["tokens"] <= cfg.max_tokens and text.strip()
                                    and self.transcript.reads(c.get("language", "en"))]
            if not self.transcript_pool:
                raise ValueError(f"the transcript loss needs clips with a text, of at most {cfg.max_tokens} tokens, in a "
                                 f"language {source} reads: none in {self.data.directory}"
                                 + (" from the chosen sources" if cfg.transcript_from else ""))
            capitals = sum(1 for i in self.transcript_pool if in_capitals(self.transcript_texts[i]))
            if capitals:
                self.log(f"{self.name}: warning: {capitals} of the transcript loss's {len(self.transcript_pool)} texts are "
                         "written in capitals, which Whisper does not write; choose the sources it reads with --transcript-from")
            self.log(f"{self.name}: transcript loss (weight {cfg.transcript_weight}) through {heard} and {source}, "
                     f"on {len(self.transcript_pool)} of {len(self.data)} clips")

    def _transcript_texts(self) -> dict[int, str]:
        """Clip index -> the text the transcript loss reads: the first source manifest's that holds the clip
        (it may spell a clip as the recogniser writes it, "Rubout GMEF 39", where the data folder keeps the
        corpus's "RUBOUT G M E F THREE NINE"), or the stored text when no sources are chosen."""
        if not self.cfg.transcript_from:
            return {i: c["text"] for i, c in enumerate(self.data.clips) if c.get("text")}
        texts: dict[int, str] = {}
        for manifest in self.cfg.transcript_from:
            for i, text in self.data.texts_from(manifest).items():
                texts.setdefault(i, text)
        return texts

    def _listening_source(self) -> Path:
        """The frozen vocoder the listening terms hear through: the run's vocoder-gta, else its vocoder,
        else that of the codec folder the job starts from."""
        sources = [job_dir(self.run, "vocoder-gta"), job_dir(self.run, "vocoder")]
        sources += [Path(self.cfg.init_from)] if self.cfg.init_from else []
        for source in sources:
            found = read_modules(source)
            if found is not None and "vocoder" in found:
                return source
        raise FileNotFoundError(f"the re-encoding and transcript losses need a trained vocoder: none in {', '.join(map(str, sources))}")

    def _listen_through(self, source: Path, device: torch.device) -> None:
        vocoder = Vocoder(self.codec.vocoder, self.codec.mel)
        vocoder.load_state_dict(read_modules(source)["vocoder"])
        self.listening_vocoder, self.listening_source = frozen(vocoder, device), source

    def extra_state(self) -> dict[str, Any]:
        # a resume hears through the same vocoder, even once the run has one of its own
        return {"listening_vocoder": str(self.listening_source)} if self.listening_source is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        source = state.get("listening_vocoder")
        if source and Path(source) != self.listening_source:
            self._listen_through(Path(source), self.device)

    # -- batches -------------------------------------------------------------------------------------------------
    def _reference(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """Up to 4 s of another clip of the same speaker (the clip itself if it is the only one, or for a
        `self_reference` share of the crops)."""
        others = [k for k in self.by_speaker[self.data.clips[i]["speaker"]] if k != i]
        own = self.cfg.self_reference and rng.random() < self.cfg.self_reference
        j = i if own or not others else int(rng.choice(others))
        audio = self.data.audio_of(j)
        n = min(len(audio), int(REFERENCE_SECONDS * 16000))
        start = int(rng.integers(0, len(audio) - n + 1))
        return audio[start:start + n]

    def _reference_mels(self, idx: list[int], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        refs = [self._reference(i, rng) for i in idx]
        ref = torch.zeros(len(refs), max(len(r) for r in refs))
        for b, r in enumerate(refs):
            ref[b, : len(r)] = torch.from_numpy(r)
        return self.mel.cpu()(ref), torch.tensor([len(r) // self.codec.mel.hop_length + 1 for r in refs])

    def _tokens_of(self, clip: dict, start: int, n: int) -> torch.Tensor:
        offset = clip["feature_offset"] + start
        return torch.from_numpy(self.tokens[offset: offset + n].astype(np.int64))

    def crops(self, rng: np.random.Generator, equal_length: bool = False) -> CodecBatch:
        """Random crops of random clips: tokens (B, T), lengths (B,), their real mel (B, n_mels, 4T), a
        reference of the same voice (mel (B, n_mels, R), lengths (B,)) and the crops' audio (B, 640 T).
        With `equal_length` every crop has the length of the shortest."""
        spt, up = self.codec.tokenizer.samples_per_token, self.codec.token2mel.upsample
        mel = self.mel.cpu()
        idx = self.draw_clips(rng, self.cfg.batch)
        shortest = min(self.data.clips[i]["tokens"] for i in idx)
        crops = []
        for i in idx:
            c = self.data.clips[i]
            n = min(shortest if equal_length else c["tokens"], self.cfg.max_tokens)
            crops.append((i, int(rng.integers(0, c["tokens"] - n + 1)), n))
        T = max(n for _, _, n in crops)
        tokens = torch.zeros(len(crops), T, dtype=torch.long)
        target = torch.full((len(crops), self.codec.mel.n_mels, up * T), math.log(self.codec.mel.log_floor))
        waves = torch.zeros(len(crops), spt * T)
        for b, (i, a, n) in enumerate(crops):
            tokens[b, :n] = self._tokens_of(self.data.clips[i], a, n)
            audio = torch.from_numpy(self.data.audio_of(i)[a * spt: (a + n) * spt])
            waves[b, : len(audio)] = audio
            m = mel(audio)[:, : up * n]
            target[b, :, : m.shape[-1]] = m
        ref_mel, ref_len = self._reference_mels([i for i, _, _ in crops], rng)
        return CodecBatch(tokens=tokens, lengths=torch.tensor([n for _, _, n in crops]), target=target, ref_mel=ref_mel,
                          ref_len=ref_len, waves=waves, seed=int(rng.integers(2**62)))

    def draw(self, rng: np.random.Generator) -> CodecBatch:
        batch = self.crops(rng)
        if self.cfg.transcript_weight:
            batch |= self._transcript_clips(rng)
        return batch

    def _transcript_clips(self, rng: np.random.Generator) -> dict[str, Any]:
        """Whole clips of the transcript pool: their tokens, a voice, their texts, and the long-term
        spectrum (mean log-mel) of each clip's own audio with its frame count."""
        spt, up = self.codec.tokenizer.samples_per_token, self.codec.token2mel.upsample
        idx = self.draw_clips(rng, self.cfg.transcript_clips, among=self.transcript_pool)
        clips = [self.data.clips[i] for i in idx]
        tokens = torch.zeros(len(idx), max(c["tokens"] for c in clips), dtype=torch.long)
        spectra, frames = [], []
        for b, (i, c) in enumerate(zip(idx, clips)):
            tokens[b, : c["tokens"]] = self._tokens_of(c, 0, c["tokens"])
            real = self.mel.cpu()(torch.from_numpy(self.data.audio_of(i)[: spt * c["tokens"]]))[:, : up * c["tokens"]]
            spectra.append(real.mean(-1))
            frames.append(real.shape[-1])
        ref_mel, ref_len = self._reference_mels(idx, rng)
        return {"t_tokens": tokens, "t_lengths": torch.tensor([c["tokens"] for c in clips]), "t_ref_mel": ref_mel,
                "t_ref_len": ref_len, "t_spectrum": torch.stack(spectra), "t_frames": frames,
                "t_texts": [self.transcript_texts[i] for i in idx], "t_languages": [c.get("language", "en") for c in clips]}

    # -- the loss ------------------------------------------------------------------------------------------------
    def loss(self, model, batch: CodecBatch, phase: PhaseConfig):
        cfg, up = self.cfg, self.codec.token2mel.upsample
        lengths = batch["lengths"]
        pred = model["token2mel"](batch["tokens"], model["speaker"](batch["ref_mel"], batch["ref_len"]), lengths)
        mask = length_mask(lengths * up, pred.shape[-1])[:, None, :].float()  # (B, 1, 4T)
        l1 = ((pred - batch["target"]).abs() * mask).sum() / (mask.sum() * pred.shape[1])
        total, parts = l1, {"mel_l1": float(l1.detach())}
        if self.reencoder is not None:
            spt = self.codec.tokenizer.samples_per_token
            n = lengths[: cfg.cycle_clips].clamp(max=cfg.cycle_tokens).tolist()
            # one clip at a time through the vocoder: no padding reaches the audio that is compared
            fake = [self.listening_vocoder(pred[b: b + 1, :, : up * k])[0] for b, k in enumerate(n)]
            real = [batch["waves"][b, : spt * k] for b, k in enumerate(n)]
            cycle = self.reencoder.distance(fake, real)
            total, parts["cycle"] = total + cfg.cycle_weight * cycle, float(cycle.detach())
        if self.transcript is not None:
            t_lengths = batch["t_lengths"]
            t_pred = model["token2mel"](batch["t_tokens"], model["speaker"](batch["t_ref_mel"], batch["t_ref_len"]), t_lengths)
            fake = [self.listening_vocoder(t_pred[b: b + 1, :, : up * int(k)])[0] for b, k in enumerate(t_lengths)]
            transcript = self.transcript(fake, batch["t_texts"], batch["t_languages"])
            total, parts["transcript"] = total + cfg.transcript_weight * transcript, float(transcript.detach())
            if cfg.voice_weight:
                voice = torch.stack([(t_pred[b, :, :f].mean(-1) - batch["t_spectrum"][b]).abs().mean()
                                     for b, f in enumerate(batch["t_frames"])]).mean()
                total, parts["voice"] = total + cfg.voice_weight * voice, float(voice.detach())
        return total, {"loss": float(total.detach()), **parts}


class VocoderGtaObjective(Token2MelObjective):
    """The run's vocoder (or `init_from`'s) fine-tuned on the frozen token-to-mel model's mels: the run's
    token2mel result, else the token-to-mel model of the codec folder it starts from."""

    name = "vocoder-gta"

    def modules(self) -> dict[str, nn.Module]:
        return {"vocoder": Vocoder(self.codec.vocoder, self.codec.mel)}

    def default_start(self) -> Path | None:
        start = job_dir(self.run, "vocoder")
        if read_modules(start) is None:
            raise FileNotFoundError(f"{start} holds no trained vocoder: train it first, or start from a codec (--init-from)")
        return start

    def start_weights(self, name: str, state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
        return state

    def setup(self, device: torch.device) -> None:
        sources = [job_dir(self.run, "token2mel")] + ([Path(self.cfg.init_from)] if self.cfg.init_from else [])
        found = next(((s, m) for s in sources if (m := read_modules(s)) is not None and "token2mel" in m), None)
        if found is None:
            raise FileNotFoundError(f"vocoder-gta voices a trained token-to-mel model: none in {', '.join(map(str, sources))}")
        source, modules = found
        c = self.codec
        self.speaker = SpeakerEncoder(c.speaker, c.mel.n_mels)
        self.token2mel = Token2Mel(c.token2mel, c.tokenizer.codebook_size, c.mel.n_mels, c.speaker.dim)
        for name in ("speaker", "token2mel"):
            getattr(self, name).load_state_dict(modules[name])
            frozen(getattr(self, name), device)
        self.vocoder_loss = VocoderLoss(self.cfg.adversarial_weight, device)
        self.log(f"{self.name}: the mels of the token-to-mel model of {source}")

    def draw(self, rng: np.random.Generator) -> CodecBatch:
        return self.crops(rng, equal_length=True)

    def loss(self, model, batch: CodecBatch, phase: PhaseConfig):
        with torch.no_grad():
            mel = self.token2mel(batch["tokens"], self.speaker(batch["ref_mel"], batch["ref_len"]), batch["lengths"])
        pred = model["vocoder"](mel)  # (B, 640 T)
        target = batch["target"]
        loss, parts = self.vocoder_loss(pred, batch["waves"], self.mel(pred)[..., : target.shape[-1]], target,
                                        np.random.default_rng(batch["seed"]))
        return loss, {"loss": float(loss.detach()), **parts}

    def extra_state(self) -> dict[str, Any]:
        return self.vocoder_loss.state()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.vocoder_loss.load(state)


OBJECTIVES = {"vocoder": VocoderObjective, "token2mel": Token2MelObjective, "vocoder-gta": VocoderGtaObjective}


def train_job(cfg: CodecJobConfig, codec: CodecConfig, *, resume: bool = False, log: Callable[[str], None] = print,
              encoder: nn.Module | None = None, progress: bool = True) -> Path:
    """Run one job in RUN/<job> with the Trainer; returns the job's result folder."""
    from unisono.train.trainer import Trainer

    objective = OBJECTIVES[cfg.job](cfg, codec, log=log, encoder=encoder)
    return Trainer(cfg.stage(), job_dir(cfg.run, cfg.job), objective=objective, resume=resume, progress=progress).run()


def export_codec(run: str | Path, out: str | Path, codec: CodecConfig, vocoder: str = "vocoder") -> Path:
    """Gather a run's trained parts into a codec folder (float16 safetensors, `SpeechCodec.load`): its
    codebook, its token2mel job's speaker encoder and token-to-mel model, and the vocoder `vocoder` names:
    the run's "vocoder" or "vocoder-gta" job, or an exported codec folder."""
    from unisono.codec.codebook import read_codebook
    from unisono.codec.codec import SpeechCodec

    run = Path(run)
    result = SpeechCodec(codec, centroids=read_codebook(run).centroids)
    t2m = read_modules(job_dir(run, "token2mel"))
    if t2m is None:
        raise FileNotFoundError(f"{job_dir(run, 'token2mel')} holds no trained token-to-mel model")
    source = Path(vocoder) if vocoder not in ("vocoder", "vocoder-gta") else job_dir(run, vocoder)
    voc = read_modules(source)
    if voc is None or "vocoder" not in voc:
        raise FileNotFoundError(f"{source} holds no trained vocoder")
    result.speaker.load_state_dict(t2m["speaker"])
    result.token2mel.load_state_dict(t2m["token2mel"])
    result.vocoder.load_state_dict(voc["vocoder"])
    return result.save(out)
