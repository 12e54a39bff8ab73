"""Spoken dialogue, turn by turn: what the server's Realtime sessions do, in-process.

    user audio ─► ASR (modes.asr) ─► the user's words (shown, and kept in the history)
    [<|system|> persona <|end|>] history (text turns, the last `max_history_turns`)
      <|user|> <|audio_start|> the turn's audio <|audio_end|> <|end|> <|assistant|>
      ─► a decode session, text tokens only ─► the reply's words
    ─► TTS (modes.tts) ─► the reply spoken, in the conversation's voice

The reply hears the turn itself, not only its transcript (the `chat` training task's prompt), so
a model trained on spoken dialogue can answer how something was said as well as what. A typed
turn is a text part. A `Conversation` keeps the history; each `turn` returns the user's
transcript, the reply and its audio. The history is bounded, so a long conversation keeps a prompt
the model was trained on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from unisono.audio.io import AUDIO_EXTENSIONS
from unisono.decode.sampling import SamplingConfig
from unisono.model.vocab import Turn

if TYPE_CHECKING:
    from unisono.model.unisono import Unisono


@dataclass
class ChatOptions:
    system: str | None = None  # a persona or instructions: the system turn
    max_tokens: int = 96  # of a reply
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int | None = None
    max_history_turns: int = 8  # user and assistant turns kept before the new one
    voice: Any = None  # see modes.tts.voice_embedding; None: the default voice
    speak: bool = True  # also say the reply (needs a model with speech tokens)

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.max_history_turns < 0:
            raise ValueError("max_tokens must be >= 1 and max_history_turns >= 0")


@dataclass
class ChatReply:
    user_text: str
    text: str
    audio: np.ndarray | None  # 16 kHz float32, None when not spoken
    finish_reason: str  # stop | length
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # heard, replied, first_audio, spoken: since the call


class Conversation:
    def __init__(self, model: "Unisono", options: ChatOptions | None = None):
        self.model, self.options = model, options or ChatOptions()
        self.history: list[Turn] = []
        self._turns = 0
        if self.options.speak and model.vocab.n_speech == 0:
            raise ValueError("this model has no speech tokens: it cannot speak its replies (speak=False for text)")

    def prompt(self, user: str | np.ndarray) -> list[Turn]:
        """The turns the reply is decoded from; `user` is the new turn's words or its 16 kHz audio."""
        keep = self.history[-self.options.max_history_turns:] if self.options.max_history_turns else []
        return chat_turns(self.options.system, keep, user)

    def reply_text(self, user: str | np.ndarray) -> tuple[str, str]:
        """The reply's words to `user` after the conversation so far, and why it ended (stop | length)."""
        embeds, _ = embed_turns(self.model, self.prompt(user))
        return self.reply_from(embeds)

    @torch.no_grad()
    def reply_from(self, embeds: torch.Tensor) -> tuple[str, str]:
        """`reply_text` from the prompt's embeddings (`embed_turns(model, prompt(user))`), so that
        several samples of one turn encode its audio once."""
        from unisono.decode.session import LENGTH, Session, SessionConfig
        from unisono.modes.asr import text_tokens_mask

        o, vocab = self.options, self.model.vocab
        seed = None if o.seed is None else o.seed + self._turns
        config = SessionConfig(max_new_tokens=o.max_tokens, stop_ids=(vocab.end_id,), allowed=text_tokens_mask(self.model),
                               sampling=SamplingConfig(temperature=o.temperature, top_p=o.top_p, seed=seed))
        session = Session(self.model, config)
        session.prefill(embeds)
        tokens = [t for t in session.tokens() if t != vocab.end_id]
        return vocab.decode_text(tokens).strip(), "length" if session.finish_reason == LENGTH else "stop"

    def turn(self, user: np.ndarray | str) -> ChatReply:
        """One exchange: audio (16 kHz samples or a path) or text in, the reply out, with the time
        each stage had taken since the call (`seconds`)."""
        from unisono.modes.tts import TTSOptions, speak_stream

        started = time.perf_counter()
        seconds: dict[str, float] = {}
        warnings: list[str] = []
        heard: str | np.ndarray
        if isinstance(user, str) and not user.lower().endswith(AUDIO_EXTENSIONS):
            user_text = heard = user.strip()
        else:
            from unisono.audio.io import load_audio

            audio = load_audio(user) if isinstance(user, str) else np.asarray(user, np.float32)
            transcript = self.model.transcribe(audio)
            user_text, warnings = transcript.text.strip(), list(transcript.warnings)
            heard = audio
        if not user_text:
            raise ValueError("nothing was said in this turn" if not isinstance(user, str) else "the turn is empty")
        seconds["heard"] = time.perf_counter() - started
        text, finish = self.reply_text(heard)
        seconds["replied"] = time.perf_counter() - started
        audio = None
        if self.options.speak and text:
            seed = None if self.options.seed is None else self.options.seed + self._turns
            records, chunks = [], []
            try:
                for chunk in speak_stream(self.model, text, voice=self.options.voice, options=TTSOptions(seed=seed),
                                          report=records.append):
                    seconds.setdefault("first_audio", time.perf_counter() - started)
                    chunks.append(chunk)
                audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
                warnings += records[0].warnings
                seconds["spoken"] = time.perf_counter() - started
            except ValueError as e:  # a reply with nothing speakable in it
                warnings.append(f"the reply was not spoken: {e}")
        self.history += [Turn("user", [user_text]), Turn("assistant", [text])]
        self._turns += 1
        return ChatReply(user_text, text, audio, finish, warnings, seconds)


def chat_turns(persona: str | None, history: Sequence[Turn], user: Any) -> list[Turn]:
    """The chat prompt: the persona as the system turn, the earlier turns, then the new user turn
    (its words, its 16 kHz audio, or an `Audio(n)` placeholder). The chat mode decodes from it, the
    `chat` training task and the dialogue DPO pairs learn on it."""
    return ([Turn("system", [persona])] if persona else []) + list(history) + [Turn("user", [user])]


@torch.no_grad()
def embed_turns(model: "Unisono", turns: Sequence[Turn]) -> tuple[torch.Tensor, int]:
    """The input embeddings of a chat prompt (turns with a role and parts: text, or 16 kHz audio
    arrays, each clip encoded and put where it stands), ending with `<|assistant|>`; and the
    prompt's length."""
    from unisono.audio.features import batch_log_mel
    from unisono.model.vocab import Audio

    clips = [p for t in turns for p in t.parts if isinstance(p, np.ndarray)]
    feats = lengths = None
    if clips:
        mel, mel_lengths = batch_log_mel(clips, n_mels=model.config.encoder.n_mels)
        feats, lengths = model.encode_audio(mel.to(model.device), mel_lengths.to(model.device))
    positions = iter(int(n) for n in (lengths if lengths is not None else []))
    prompt = model.vocab.encode_prompt([Turn(t.role, [Audio(next(positions)) if isinstance(p, np.ndarray) else p
                                                      for p in t.parts]) for t in turns])
    ids = torch.tensor([prompt.ids], device=model.device)
    return model.embed_prompt(ids, feats, lengths)[0], len(prompt.ids)

