"""The losses of the codec's training that listen: the multi-resolution STFT loss of the vocoder, and
two that hear a resynthesis through the tokenizer's own Whisper model, differentiable with respect to
the audio: the re-encoding distance (its encoder frames against the real audio's) and the transcript
loss (its decoder reading the clip's text back).
"""

from __future__ import annotations

import copy
import re

import torch
import torch.nn.functional as F

from unisono.codec.token2mel import length_mask


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




class Reencoder:
    """Audio -> the tokenizer's encoder frames at the token layer, differentiable with respect to the audio: what the tokenizer hears in a resynthesis. An L1 mel loss averages over
    what the tokens leave open and smears formants; this asks instead that the resynthesis carry the
    features the tokens were taken from (a cycle: tokens -> audio -> the same encoder frames).

    Distances are divided per dimension by the frames' spread on real speech (`fit_scale`), so the few
    very large dimensions of Whisper's residual stream do not outweigh the rest."""

    def __init__(self, encoder: torch.nn.Module, layer: int, device: torch.device | str = "cpu"):
        if not 1 <= layer <= encoder.config.n_layers:
            raise ValueError(f"layer {layer}: not among the encoder's layers 1..{encoder.config.n_layers}")
        self.layer = layer
        encoder = copy.deepcopy(encoder)  # a frozen encoder runs without autograd; this copy passes gradients to its input
        encoder.config.variable_length = True  # as the tokenizer runs it
        encoder.config.frozen = False
        self.device = torch.device(device)
        self.encoder = encoder.requires_grad_(False).eval().to(self.device)
        self.scale = torch.ones(encoder.config.d_model, device=self.device)

    def __call__(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips (N_i,) -> frames (B, T50, D), zero past each item's end, and (B,) frame counts."""
        from unisono.audio.features import batch_log_mel
        from unisono.codec.tokenizer import encoder_layers

        mel, mel_lengths = batch_log_mel(waves, n_mels=self.encoder.config.n_mels, device=self.device)
        captured, frame_lengths = encoder_layers(self.encoder, mel, mel_lengths, (self.layer,))
        frames = captured[self.layer]
        return frames * length_mask(frame_lengths, frames.shape[1])[..., None], frame_lengths

    @torch.no_grad()
    def fit_scale(self, waves: list[torch.Tensor]) -> None:
        frames, lengths = self(waves)
        real = torch.cat([f[:n] for f, n in zip(frames, lengths.tolist())])
        self.scale = real.std(0).clamp(min=1e-3 * float(real.std()))

    def distance(self, fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
        """Mean scaled L1 between the frames of paired clips (the real ones without gradient)."""
        f, lengths = self(fake)
        with torch.no_grad():
            r, _ = self(real)
        n = min(f.shape[1], r.shape[1])
        mask = length_mask(lengths, n)[..., None].float()
        scaled = (f[:, :n] - r[:, :n]).abs() / self.scale
        return (scaled * mask).sum() / (mask.sum() * f.shape[-1])


def in_capitals(text: str) -> bool:
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

    The encoder runs on the clip alone, as the tokenizer runs it (six times cheaper than Whisper's padded
    30 s window on an 8 s clip). The recogniser that scores the codec is
    this same model, so a codec trained with this loss has to be judged by an independent one as well
    (PocketSphinx)."""

    def __init__(self, source: str, encoder: torch.nn.Module, device: torch.device | str = "cpu"):
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
        encoder.config.variable_length, encoder.config.frozen = True, False
        self.encoder = encoder.requires_grad_(False).eval().to(self.device)
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
        from unisono.audio.features import batch_log_mel

        mel, mel_lengths = batch_log_mel(waves, n_mels=self.encoder.config.n_mels, device=self.device)
        frames, frame_lengths = self.encoder(mel, mel_lengths)
        # one clip at a time: Whisper's decoder takes no mask over the frames, so no padding may reach it
        total, count = frames.new_zeros(()), 0
        for b, (text, language) in enumerate(zip(texts, languages)):
            x = frames[b: b + 1, : int(frame_lengths[b])]
            seq = torch.tensor(self.token_ids(text, language), device=x.device)
            n_text = len(seq) - len(self.prompt(language))  # the text and the end token are predicted
            hidden = self.decoder(input_ids=seq[None, :-1], encoder_hidden_states=x).last_hidden_state
            total = total + F.cross_entropy(self.proj_out(hidden[0, -n_text:]), seq[-n_text:], reduction="sum")
            count += n_text
        return total / count
