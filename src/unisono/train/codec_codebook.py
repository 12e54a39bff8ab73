"""A codebook trained for the words: the supervised alternative to k-means (`unisono codec train-tokenizer`).

k-means places its centroids where the encoder's features are dense, and at the tokenizer's layer much
of their spread is voice, loudness and where a frame sits in the clip. This codebook is trained, as the
supervised semantic tokens of CosyVoice's S3 tokenizer are, so that the tokenizer's own Whisper model can
read the clip's text back from the tokens:

    layer-L features (25 Hz) ─► standardise ─► linear D → d ─► nearest of K unit codes (cosine) ─► token
    token ─► its code ─► linear d → D ─► 3 convolutions (±6 tokens) ─► + learned position
          ─► Whisper's layers after L ─► its decoder, fed the clip's text        (cross-entropy)
                                      └► the clip's standardised features           (mean squared error)

The right half is scaffolding: it reads the tokens as a detokenizer would, with context, and is dropped
after training. Codes get the usual VQ-VAE codebook and commitment terms through the straight-through
estimator; a code no batch has picked for a while restarts at a feature of the current batch.

The projection is linear and the codes are unit vectors, so the tokenizer stays a linear scorer of the
features, `argmax_k f · w_k + b_k` (normalising the projected feature does not change the argmax): it is
stored as `centroids` (the w_k) and `bias` in the run's tokenizer.safetensors, and `SpeechTokenizer`
quantizes with it as it does with k-means centroids.

A detokenizer trained on another codebook can be fine-tuned onto this one: `remap_token_embedding`
starts each new token's embedding at the mean of the old ones over the frames it takes
(`unisono codec train token2mel --init-from CODEC` does this when CODEC's codebook is not the run's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unisono.codec.config import CodecConfig
from unisono.train.codec_data import CodecData
from unisono.train.codec_train import TrainConfig, TranscriptLoss, _Job, tokenize_data

MAX_TOKENS = 750  # one 30 s window: the longest clip the encoder reads


@dataclass
class CodebookConfig:
    code_dim: int = 16  # the space the codes live in (a small one keeps every code in use)
    commitment: float = 0.25  # VQ-VAE's beta
    transcript_weight: float = 1.0
    feature_weight: float = 1.0
    restart_every: int = 25  # steps between restarts of unused codes
    stats_frames: int = 200_000  # frames the standardisation and the initial codes are taken from


class TrainedCodebook(nn.Module):
    """Standardise, project, nearest unit code: the part of training that ships, as a linear scorer."""

    def __init__(self, dim: int, size: int, code_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("usage", torch.ones(size))  # decaying count of each code's picks
        self.proj = nn.Linear(dim, code_dim)
        self.codes = nn.Parameter(F.normalize(torch.randn(size, code_dim), dim=-1))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj((features - self.mean) / self.std), dim=-1)

    def forward(self, features: torch.Tensor, commitment: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T, D) -> straight-through codes (T, d), tokens (T,), and the VQ-VAE loss: the codebook term (codes
        towards the features) plus `commitment` times the commitment term (features towards their codes)."""
        z = self.project(features)
        codes = F.normalize(self.codes, dim=-1)
        tokens = (z @ codes.T).argmax(-1)
        q = codes[tokens]
        vq = (q - z.detach()).pow(2).sum(-1).mean() + commitment * (z - q.detach()).pow(2).sum(-1).mean()
        return z + (q - z).detach(), tokens, vq

    def scorer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, D) weights and (K,) biases: argmax_k f · w_k + b_k is the token `forward` picks."""
        codes = F.normalize(self.codes, dim=-1)
        a = self.proj.weight / self.std
        b = self.proj.bias - a @ self.mean
        return (codes @ a).detach().clone(), (codes @ b).detach().clone()

    @torch.no_grad()
    def initialise(self, sample: torch.Tensor, iterations: int = 20, seed: int = 0) -> None:
        """Standardisation from `sample` (N, D); the projection onto its top principal components; the codes
        by spherical k-means of the projected sample (so training starts from a k-means codebook)."""
        g = torch.Generator().manual_seed(seed)
        self.mean.copy_(sample.mean(0))
        self.std.copy_(sample.std(0).clamp(min=1e-3))
        x = (sample - self.mean) / self.std
        cov = x.T @ x / len(x)
        _, vectors = torch.linalg.eigh(cov.double())
        top = vectors[:, -self.proj.out_features:].flip(-1).float().T  # (d, D), deterministic unlike pca_lowrank
        self.proj.weight.copy_(top)
        self.proj.bias.zero_()
        z = self.project(sample)
        c = z[torch.randperm(len(z), generator=g)[: len(self.codes)]].clone()
        for _ in range(iterations):
            idx = (z @ c.T).argmax(-1)
            sums = torch.zeros_like(c).index_add_(0, idx, z)
            used = torch.bincount(idx, minlength=len(c)) > 0
            c[used] = F.normalize(sums[used], dim=-1)
        self.codes.copy_(c)


class Readout(nn.Module):
    """Scaffolding: codes -> standardised features at the tokenizer's layer, with ±6 tokens of context."""

    def __init__(self, code_dim: int, dim: int, max_tokens: int = MAX_TOKENS):
        super().__init__()
        self.up = nn.Linear(code_dim, dim)
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, 5, padding=2) for _ in range(3))
        self.position = nn.Parameter(torch.zeros(max_tokens, dim))  # Whisper's later layers need to know where a frame is

    def forward(self, codes: torch.Tensor) -> torch.Tensor:  # (T, d) -> (T, D)
        x = self.up(codes).T[None]
        for conv in self.convs:
            x = x + conv(F.gelu(x))
        return x[0].T + self.position[: len(codes)]


class CodebookJob(_Job):
    """Trains `TrainedCodebook` (and its scaffolding) on a prepared data folder's stored features; where it
    stops writes the run's tokenizer.safetensors and tokens.npy, as `fit_tokenizer` does for k-means."""

    name = "codebook"

    def __init__(self, data: CodecData, run: Path, codec_config: CodecConfig, cfg: TrainConfig,
                 book_cfg: CodebookConfig | None = None, log=print, encoder: nn.Module | None = None):
        from unisono.model.encoder import AudioEncoder

        if data.features is None or data.layer != codec_config.tokenizer.layer:
            raise ValueError(f"open the data folder at the tokenizer's layer {codec_config.tokenizer.layer}")
        self.data, self.book_cfg = data, book_cfg or CodebookConfig()
        source = codec_config.tokenizer.encoder_source
        self.reader = TranscriptLoss(source, encoder if encoder is not None else AudioEncoder.from_source(source))
        self.pool = [i for i, c in enumerate(data.clips) if c["tokens"] <= cfg.max_tokens and c.get("text", "").strip()
                     and self.reader.reads(c.get("language", "en"))]
        if not self.pool:
            raise ValueError(f"no clip of {data.directory} has a text the tokenizer's Whisper model reads, "
                             f"in at most {cfg.max_tokens} tokens")
        super().__init__(run, codec_config, cfg, log)
        if self.step == 0:
            self._initialise()

    def build(self) -> dict[str, nn.Module]:
        dim, size = int(self.data.dim), self.codec_config.tokenizer.codebook_size
        return {"codebook": TrainedCodebook(dim, size, self.book_cfg.code_dim), "readout": Readout(self.book_cfg.code_dim, dim)}

    def load_start_weights(self, name: str, module: nn.Module, state: dict) -> None:
        raise ValueError("a codebook starts from the stored features, not from another run's weights")

    @torch.no_grad()
    def _initialise(self) -> None:
        feats = self.data.features
        stride = max(1, len(feats) // self.book_cfg.stats_frames)
        sample = torch.from_numpy(np.asarray(feats[::stride], dtype=np.float32))
        book, readout = self.modules["codebook"], self.modules["readout"]
        book.initialise(sample, seed=self.cfg.seed)
        # the position term starts as the mean standardised feature at each position within a clip
        total, count = torch.zeros_like(readout.position), torch.zeros(len(readout.position), 1)
        for i in self.pool[:2000]:
            f = (torch.from_numpy(np.asarray(self.data.features_of(i), dtype=np.float32)) - book.mean) / book.std
            total[: len(f)] += f
            count[: len(f)] += 1
        seen = count[:, 0] >= min(20.0, float(count.max()))  # positions few clips reach take the last well-measured one
        position = total / count.clamp(min=1)
        position[~seen] = position[seen][-1]
        readout.position.copy_(position - position[seen].mean(0))
        self.log(f"{self.name}: {len(book.codes)} codes in {book.proj.out_features} dimensions, from spherical k-means on "
                 f"{len(sample)} frames; {len(self.pool)} clips with a text to read")

    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        book, readout, cfg = self.modules["codebook"], self.modules["readout"], self.book_cfg
        clips = [self.rng.choice(self.pool) for _ in range(self.cfg.batch)]
        feats = [torch.from_numpy(np.asarray(self.data.features_of(i), dtype=np.float32)) for i in clips]
        if self.step > 0 and self.step % cfg.restart_every == 0:
            self._restart_unused(book, feats)
        rebuilt, vq, mse, tokens = [], 0.0, 0.0, []
        for f in feats:
            q, t, v = book(f, cfg.commitment)
            r = readout(q)
            mse = mse + (r - (f - book.mean) / book.std).pow(2).mean()
            vq = vq + v
            rebuilt.append(r * book.std + book.mean)
            tokens.append(t)
        texts = [self.data.clips[i]["text"] for i in clips]
        languages = [self.data.clips[i].get("language", "en") for i in clips]
        ce = self.reader.read_features(rebuilt, self.codec_config.tokenizer.layer, self.codec_config.tokenizer.pool,
                                       texts, languages)
        mse, vq = mse / len(feats), vq / len(feats)
        picked = torch.bincount(torch.cat(tokens), minlength=len(book.usage)).float()
        with torch.no_grad():
            book.usage.mul_(0.98).add_(picked)
        p = picked[picked > 0] / picked.sum()
        logs = {"transcript": float(ce.detach()), "features": float(mse.detach()), "vq": float(vq.detach()),
                "batch_perplexity": math.exp(float(-(p * p.log()).sum()))}
        return cfg.transcript_weight * ce + cfg.feature_weight * mse + vq, logs

    @torch.no_grad()
    def _restart_unused(self, book: TrainedCodebook, feats: list[torch.Tensor]) -> None:
        """Codes no batch has picked for a while move to features of this batch (drawn with the job's
        RNG, which resumes with it: a resumed run restarts the same codes at the same places)."""
        dead = (book.usage < 0.02).nonzero()[:, 0]
        if len(dead):
            z = book.project(torch.cat(feats))
            picks = torch.tensor([self.rng.randrange(len(z)) for _ in range(len(dead))])
            book.codes[dead] = z[picks]
            book.usage[dead] = 0.5
            self.log(f"{self.name} step {self.step}: {len(dead)} unused codes restarted")

    def train(self, until: int | None = None, progress=None) -> None:
        super().train(until, progress)
        self.write_tokenizer()  # also where `until` stops it: a codebook is usable from any step

    def write_tokenizer(self) -> np.ndarray:
        """The run's tokenizer.safetensors (scorer weights and biases) and tokens.npy."""
        centroids, bias = self.modules["codebook"].scorer()
        return tokenize_data(self.data, self.run, centroids, self.log, bias=bias)


def remap_token_embedding(embedding: torch.Tensor, old_tokens: np.ndarray, new_tokens: np.ndarray,
                          size: int) -> tuple[torch.Tensor, float]:
    """(K_old, E) embeddings of the old tokens -> (size, E) of the new: each the mean over the frames the new
    token takes of their old tokens' embeddings (the mean of all old embeddings for a token never seen), and
    the share of a new token's frames its commonest old token covers (how alike the two codebooks are)."""
    if len(old_tokens) != len(new_tokens):
        raise ValueError(f"{len(old_tokens)} old tokens for {len(new_tokens)} new ones: tokenize the same frames")
    old = torch.from_numpy(np.asarray(old_tokens, dtype=np.int64))
    new = torch.from_numpy(np.asarray(new_tokens, dtype=np.int64))
    sums = torch.zeros(size, embedding.shape[1]).index_add_(0, new, embedding[old].float())
    counts = torch.bincount(new, minlength=size).float()
    mapped = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], embedding.float().mean(0))
    pairs = torch.bincount(new * len(embedding) + old, minlength=size * len(embedding)).reshape(size, len(embedding))
    agreement = float(pairs.max(1).values.sum() / max(1, len(new)))
    return mapped, agreement
