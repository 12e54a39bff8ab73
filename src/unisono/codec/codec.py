"""The speech codec: tokenizer + detokenizer (speaker encoder, token-to-mel, vocoder), saved as one
directory, the `speech/` folder of a unisono checkpoint.

    speech/
      config.json         CodecConfig
      codec.safetensors   float16: centroids, speaker.*, token2mel.*, vocoder.*

The tokenizer's encoder is the frozen Whisper encoder named by `tokenizer.encoder_source`; its
weights are not stored again, and it is only loaded when audio is tokenized (a TTS that only
detokenizes never pays for it).

>>> codec = SpeechCodec.load(default_codec_path())
>>> tokens = codec.tokenize(audio)                       # (T,) int64, 25 per second
>>> voice = codec.speaker_embedding(reference_audio)     # (S,)
>>> wave = codec.detokenize(tokens, voice)               # float32, 640 T samples at 16 kHz
>>> for chunk in codec.stream_detokenize(token_chunks, voice): play(chunk)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from unisono.codec.config import CodecConfig
from unisono.codec.mel import MelSpectrogram
from unisono.codec.streaming import WindowStream
from unisono.codec.token2mel import SpeakerEncoder, Token2Mel
from unisono.codec.vocoder import Vocoder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "codec.safetensors"
REFERENCE_SECONDS = 6.0  # the speaker encoder hears at most this much of a reference clip


class SpeechCodec(nn.Module):
    def __init__(self, config: CodecConfig, centroids: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        c = config
        self.mel = MelSpectrogram(c.mel)
        self.speaker = SpeakerEncoder(c.speaker, c.mel.n_mels)
        self.token2mel = Token2Mel(c.token2mel, c.tokenizer.codebook_size, c.mel.n_mels, c.speaker.dim)
        self.vocoder = Vocoder(c.vocoder, c.mel)
        self.register_buffer("centroids", centroids if centroids is not None else torch.zeros(c.tokenizer.codebook_size, 0))
        self._tokenizer = None

    # -- tokenizer ---------------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The SpeechTokenizer (loads the frozen encoder on first use)."""
        from unisono.codec.tokenizer import SpeechTokenizer

        if self._tokenizer is None:
            if self.centroids.numel() == 0:
                raise ValueError("this codec has no tokenizer codebook yet; fit one (unisono train codec fit-tokenizer)")
            tok = SpeechTokenizer(self.config.tokenizer, centroids=self.centroids.float())
            object.__setattr__(self, "_tokenizer", tok)  # not a submodule: its encoder is not saved here
        return self._tokenizer

    def tokenize(self, audio: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
        return self.tokenizer.encode(audio)

    # -- detokenizer -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.vocoder.head.weight.device

    @torch.no_grad()
    def speaker_embedding(self, reference: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(S,) voice embedding of a 16 kHz reference clip (its first 6 s)."""
        wave = torch.as_tensor(np.asarray(reference, dtype=np.float32)).reshape(-1)[: int(REFERENCE_SECONDS * 16000)]
        if wave.numel() < 1600:
            raise ValueError(f"a reference clip of {wave.numel()} samples is too short; give at least 0.1 s of speech")
        return self.speaker(self.mel(wave.to(self.device))[None])[0]

    @torch.no_grad()
    def tokens_to_mel(self, tokens: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """(T,) tokens, (S,) voice -> (n_mels, 4T) log-mel."""
        tokens = self._check_tokens(tokens)
        return self.token2mel(tokens[None].to(self.device), speaker[None].to(self.device))[0]

    @torch.no_grad()
    def mel_to_audio(self, mel: torch.Tensor) -> torch.Tensor:
        return self.vocoder(mel[None].to(self.device))[0]

    @torch.no_grad()
    def detokenize(self, tokens: torch.Tensor, speaker: torch.Tensor) -> np.ndarray:
        """(T,) tokens + (S,) voice -> float32 audio of 640 T samples at 16 kHz."""
        return soft_limit(self.mel_to_audio(self.tokens_to_mel(tokens, speaker))).cpu().numpy()

    def resynthesize(self, audio: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """audio -> tokens -> audio, in the voice of `reference` (default: the clip itself)."""
        tokens = self.tokenize(audio)
        return self.detokenize(tokens, self.speaker_embedding(audio if reference is None else reference))

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
        k = self.config.tokenizer.codebook_size
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= k):
            raise ValueError(f"speech tokens must lie in 0..{k - 1}; got {int(tokens.min())}..{int(tokens.max())}")
        return tokens

    # -- streaming ---------------------------------------------------------------------------

    def detokenizer_stream(self, speaker: torch.Tensor, chunk_tokens: int = 25, first_chunk_tokens: int = 4) -> "DetokenizerStream":
        return DetokenizerStream(self, speaker, chunk_tokens, first_chunk_tokens)

    def stream_detokenize(
        self, token_chunks: Iterable[Sequence[int] | torch.Tensor], speaker: torch.Tensor, **kwargs: int
    ) -> Iterator[np.ndarray]:
        """Audio chunks as token chunks arrive; concatenated they equal `detokenize` of all tokens."""
        stream = self.detokenizer_stream(speaker, **kwargs)
        for chunk in token_chunks:
            audio = stream.push(chunk)
            if audio.size:
                yield audio
        audio = stream.flush()
        if audio.size:
            yield audio

    @property
    def lookahead_tokens(self) -> int:
        """Tokens the detokenizer must see after a token before that token's audio is final."""
        up = self.config.token2mel.upsample
        return self.config.token2mel.receptive_field[1] + -(-self.vocoder.receptive_field[1] // up)

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        from unisono.model.files import replace_directory

        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.state_dict().items()}
        with replace_directory(directory) as tmp:
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "unisono-speech-codec"})
            (tmp / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "SpeechCodec":
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(
                f"no speech codec at {directory}: it needs {CONFIG_FILE} and {WEIGHTS_FILE} "
                "(the speech/ folder of a unisono checkpoint, or a folder written by SpeechCodec.save)"
            )
        config = CodecConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
        state = {k: v.float() for k, v in load_file(str(directory / WEIGHTS_FILE)).items()}
        if "token_bias" in state:
            raise ValueError(f"{directory} scores its tokens with a trained codebook's bias (token_bias): "
                             "this release no longer supports it, only k-means codebooks")
        codec = cls(config, centroids=state["centroids"])
        missing, unexpected = codec.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{directory / WEIGHTS_FILE} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return codec.to(device).eval()

    def num_parameters(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"speaker": count(self.speaker), "token2mel": count(self.token2mel), "vocoder": count(self.vocoder),
                "codebook": self.centroids.numel()}


class DetokenizerStream:
    """Tokens in, audio out, exactly as the offline `detokenize` (see `WindowStream`).

    Two windowed stages: token2mel emits a token's mel frames once `right` tokens after it
    have arrived, and the vocoder emits a frame's samples once 3 frames after it exist.
    """

    def __init__(self, codec: SpeechCodec, speaker: torch.Tensor, chunk_tokens: int, first_chunk_tokens: int):
        self.codec = codec
        spk = speaker.to(codec.device)[None]
        up = codec.config.token2mel.upsample
        left, right = codec.config.token2mel.receptive_field
        self.mel_stage = WindowStream(
            lambda tok: codec.token2mel(tok, spk), left, right, up, chunk=chunk_tokens, first_chunk=first_chunk_tokens
        )
        vleft, vright = codec.vocoder.receptive_field
        self.audio_stage = WindowStream(
            codec.vocoder, vleft, vright, codec.config.mel.hop_length, chunk=1
        )

    @torch.no_grad()
    def push(self, tokens: Sequence[int] | torch.Tensor) -> np.ndarray:
        tokens = self.codec._check_tokens(torch.as_tensor(tokens))
        if tokens.numel() == 0:
            return np.zeros(0, dtype=np.float32)
        mel = self.mel_stage.push(tokens[None].to(self.codec.device))
        return self._audio(None if mel is None else self.audio_stage.push(mel))

    @torch.no_grad()
    def flush(self) -> np.ndarray:
        parts = []
        mel = self.mel_stage.flush()
        if mel is not None:
            parts.append(self.audio_stage.push(mel))
        parts.append(self.audio_stage.flush())
        parts = [p for p in parts if p is not None]
        return self._audio(torch.cat(parts, dim=-1) if parts else None)

    @staticmethod
    def _audio(wave: torch.Tensor | None) -> np.ndarray:
        if wave is None:
            return np.zeros(0, dtype=np.float32)
        return soft_limit(wave[0]).cpu().numpy()


def soft_limit(wave: torch.Tensor, knee: float = 0.8) -> torch.Tensor:
    """Identity below `knee`; above it a tanh curve towards full scale, leaving the identity with slope 1.
    A loud voice reference can push the vocoder past full scale, and a hard clip there is audible as crackle.
    Sample by sample, so streamed audio still equals the offline audio."""
    over = wave.abs() - knee
    bent = torch.sign(wave) * (knee + (1 - knee) * torch.tanh(over.clamp(min=0) / (1 - knee)))
    return torch.where(over > 0, bent, wave)


def default_codec_path() -> Path:
    """The trained codec shipped inside the package: the `speech/` folder of the embedded default model."""
    return Path(__file__).resolve().parents[1] / "assets" / "unisono-tiny" / "speech"
