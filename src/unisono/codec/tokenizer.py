"""Waveform -> speech tokens: semantic tokens from the frozen audio encoder.

    audio (16 kHz) ─► Whisper log-mel ─► frozen encoder up to layer L (B, T50, 384)
          ─► mean of each 2 frames (B, T25, 384) ─► nearest of K centroids (k-means) ─► (B, T25)

One codebook, 25 tokens per second, deterministic (nearest centroid, ties to the lower index).
A token k covers samples [640 k, 640 (k + 1)); a clip of N samples has ceil(N / 640) tokens
(the encoder pads its last frames). Clips longer than the encoder's 30 s window are cut into
30 s windows, which hold exactly 750 tokens each.

Streaming (`TokenizerStream`): the encoder attends over its whole input, so a token computed
from a prefix differs from the offline token near the end of the prefix. A streamed token is
emitted once `lookahead_tokens` tokens (320 ms) of audio after it have arrived, from an encoder
window that reaches `context_tokens` tokens (4 s) into the past; `unisono eval codec` reports
how often streamed tokens agree with the offline ones.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from unisono.codec.config import TokenizerConfig

WINDOW_SAMPLES = 480000  # the encoder's 30 s window


def encoder_layers(encoder: nn.Module, mel: torch.Tensor, mel_lengths: torch.Tensor,
                   layers: Sequence[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """The encoder's frames after each of `layers` (1-based; the last is its output, after the final
    LayerNorm): {layer: (B, T50, D)} and (B,) frame counts. Frames past an item's end are undefined
    on inner layers."""
    n_layers = encoder.config.n_layers
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for layer in layers:
        if layer < n_layers:
            def grab(_m, _i, out, layer=layer):
                captured[layer] = out[0] if isinstance(out, tuple) else out
            hooks.append(encoder.whisper.layers[layer - 1].register_forward_hook(grab))
    try:
        frames, frame_lengths = encoder(mel, mel_lengths)  # (B, T50, D), (B,)
    finally:
        for hook in hooks:
            hook.remove()
    captured[n_layers] = frames
    return captured, frame_lengths


def quantize(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(..., D) -> (...) the nearest centroid: argmax_k f · c_k - |c_k|^2 / 2 (= argmax of -|f - c_k|^2 / 2 + |f|^2 / 2,
    one matrix product instead of a distance matrix)."""
    c = centroids.float()
    return (features.float() @ c.T - 0.5 * (c * c).sum(-1)).argmax(-1)


class SpeechTokenizer(nn.Module):
    def __init__(self, config: TokenizerConfig, encoder: "nn.Module | None" = None, centroids: torch.Tensor | None = None):
        super().__init__()
        from unisono.model.encoder import AudioEncoder

        self.config = config
        if encoder is None:
            encoder = AudioEncoder.from_source(config.encoder_source)
        encoder.config.variable_length = True  # tokens come from the clip itself, not a padded window
        encoder.freeze()
        if not 1 <= config.layer <= encoder.config.n_layers:
            raise ValueError(f"tokenizer layer {config.layer} is not one of the encoder's layers 1..{encoder.config.n_layers}")
        self.encoder = encoder
        d = encoder.config.d_model
        self.register_buffer("centroids", centroids if centroids is not None else torch.zeros(config.codebook_size, d))
        if self.centroids.shape != (config.codebook_size, d):
            raise ValueError(f"centroids of shape {tuple(self.centroids.shape)}; expected ({config.codebook_size}, {d})")

    @property
    def feature_dim(self) -> int:
        return self.encoder.config.d_model

    @staticmethod
    def n_tokens(n_samples: int, samples_per_token: int = 640) -> int:
        return max(1, -(-n_samples // samples_per_token))

    # -- features --------------------------------------------------------------------------

    @torch.no_grad()
    def features(self, clips: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        """Pooled encoder features, one (ceil(N / 640), feature_dim) float32 tensor per clip."""
        layer = self.config.layer
        return [f[layer] for f in self.layer_features(clips, (layer,))]

    @torch.no_grad()
    def layer_features(self, clips: Sequence[np.ndarray | torch.Tensor], layers: Sequence[int]) -> list[dict[int, torch.Tensor]]:
        """Pooled features of several encoder layers at once: per clip {layer: (T, D)}."""
        for layer in layers:
            if not 1 <= layer <= self.encoder.config.n_layers:
                raise ValueError(f"layer {layer} is not one of the encoder's layers 1..{self.encoder.config.n_layers}")
        pieces, owners = [], []
        for i, clip in enumerate(clips):
            clip = np.asarray(clip, dtype=np.float32).reshape(-1)
            if clip.size == 0:
                raise ValueError(f"clip {i} is empty: there is nothing to tokenize")
            for start in range(0, clip.size, WINDOW_SAMPLES):
                pieces.append(clip[start:start + WINDOW_SAMPLES])
                owners.append(i)
        # similar lengths batch with little padding; a batch holds up to 2 minutes of audio
        order = sorted(range(len(pieces)), key=lambda j: len(pieces[j]))
        pooled: dict[int, dict[int, torch.Tensor]] = {}
        batch: list[int] = []
        for j in order:
            if batch and sum(len(pieces[b]) for b in batch) + len(pieces[j]) > 4 * WINDOW_SAMPLES:
                pooled.update(zip(batch, self._encode([pieces[b] for b in batch], layers)))
                batch = []
            batch.append(j)
        if batch:
            pooled.update(zip(batch, self._encode([pieces[b] for b in batch], layers)))
        out: list[dict[int, list[torch.Tensor]]] = [{layer: [] for layer in layers} for _ in clips]
        for j, owner in enumerate(owners):
            for layer in layers:
                out[owner][layer].append(pooled[j][layer])
        return [{layer: torch.cat(parts) for layer, parts in d.items()} for d in out]

    def _encode(self, pieces: list[np.ndarray], layers: Sequence[int]) -> list[dict[int, torch.Tensor]]:
        from unisono.audio.features import batch_log_mel

        mel, mel_lengths = batch_log_mel(pieces, n_mels=self.encoder.config.n_mels, device=self.centroids.device)
        captured, frame_lengths = encoder_layers(self.encoder, mel, mel_lengths, layers)
        p = self.config.pool
        result = []
        for i, (n_frames, piece) in enumerate(zip(frame_lengths.tolist(), pieces)):
            n_tok = self.n_tokens(len(piece), self.config.samples_per_token)
            item = {}
            for layer in layers:
                f = captured[layer][i, :n_frames].float()
                if f.shape[0] < n_tok * p:  # the encoder drops a partial last mel frame: repeat the last frame
                    f = torch.cat([f, f[-1:].expand(n_tok * p - f.shape[0], -1)])
                item[layer] = f[: n_tok * p].reshape(n_tok, p, -1).mean(1)
            result.append(item)
        return result

    # -- tokens ----------------------------------------------------------------------------

    def quantize(self, features: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (...) token: the nearest centroid (squared Euclidean distance)."""
        return quantize(features, self.centroids)

    @torch.no_grad()
    def encode(self, audio: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
        """Tokens of one clip (T,) or of a list of clips (a list of (T_i,) tensors)."""
        single = isinstance(audio, (np.ndarray, torch.Tensor)) and np.ndim(audio) == 1
        clips = [audio] if single else list(audio)
        tokens = [self.quantize(f) for f in self.features(clips)]
        return tokens[0] if single else tokens

    def stream(self) -> "TokenizerStream":
        return TokenizerStream(self)


class TokenizerStream:
    """Tokens as audio arrives.

    >>> s = tokenizer.stream()
    >>> for chunk in microphone():            # any chunk sizes
    ...     new_tokens = s.push(chunk)       # (n,) tokens, possibly empty
    >>> last_tokens = s.flush()
    """

    def __init__(self, tokenizer: SpeechTokenizer):
        self.tokenizer = tokenizer
        self.audio = np.zeros(0, dtype=np.float32)
        self.emitted = 0

    def push(self, chunk: np.ndarray) -> torch.Tensor:
        self.audio = np.concatenate([self.audio, np.asarray(chunk, dtype=np.float32).reshape(-1)])
        c = self.tokenizer.config
        ready = len(self.audio) // c.samples_per_token - c.lookahead_tokens  # tokens with their look-ahead heard
        return self._emit(ready)

    def flush(self) -> torch.Tensor:
        if len(self.audio) == 0:
            return torch.zeros(0, dtype=torch.long)
        return self._emit(SpeechTokenizer.n_tokens(len(self.audio), self.tokenizer.config.samples_per_token))

    def _emit(self, ready: int) -> torch.Tensor:
        c = self.tokenizer.config
        spt = c.samples_per_token
        out = [torch.zeros(0, dtype=torch.long)]
        while ready > self.emitted:  # more than one window's worth only after a very large push
            start = max(0, self.emitted - c.context_tokens)
            end = min(len(self.audio), (ready + c.lookahead_tokens) * spt, start * spt + WINDOW_SAMPLES)
            tokens = self.tokenizer.encode(self.audio[start * spt:end])
            stop = min(ready, start + len(tokens) - (0 if end == len(self.audio) else c.lookahead_tokens))
            stop = max(stop, self.emitted + 1)
            out.append(tokens[self.emitted - start: stop - start])
            self.emitted = stop
            # keep only the past the next window can reach
            keep_from = max(0, self.emitted - c.context_tokens)
            if keep_from > 0:
                self.audio = self.audio[keep_from * spt:]
                self.emitted -= keep_from
                ready -= keep_from
        return torch.cat(out)
