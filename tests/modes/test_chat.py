"""Spoken dialogue turn by turn: the prompt and its bounded history, the reply against a decode by
hand, the spoken reply against the TTS mode, and bad turns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unisono.model.vocab import Turn
from unisono.modes.chat import ChatOptions, Conversation


@pytest.fixture(scope="module")
def model():
    from unisono.model.unisono import Unisono

    return Unisono.load()


def test_the_prompt_holds_the_persona_and_a_bounded_history(model):
    chat = Conversation(model, ChatOptions(system="You are Ada.", max_history_turns=2, speak=False, temperature=0.0))
    for words in ("one", "two", "three"):
        chat.turn(words)
    prompt = chat.prompt("four")
    assert prompt[0] == Turn("system", ["You are Ada."]) and prompt[-1] == Turn("user", ["four"])
    assert [t.parts[0] for t in prompt[1:-1]] == ["three", chat.history[-1].parts[0]]  # only the last 2 turns
    assert len(chat.history) == 6


def test_the_reply_is_the_greedy_decode_of_the_prompt(model):
    from unisono.decode.session import Session, SessionConfig
    from unisono.modes.asr import text_tokens_mask

    chat = Conversation(model, ChatOptions(speak=False, temperature=0.0, max_tokens=20))
    reply = chat.turn("Hello, who are you?")
    vocab = model.vocab
    ids = vocab.encode_prompt([Turn("user", ["Hello, who are you?"])]).ids
    session = Session(model, SessionConfig(max_new_tokens=20, stop_ids=(vocab.end_id,), allowed=text_tokens_mask(model),
                                           mtp=False))
    with torch.no_grad():
        session.prefill(model.embed_prompt(torch.tensor([ids]))[0])
        by_hand = vocab.decode_text([t for t in session.tokens() if t != vocab.end_id]).strip()
    assert reply.text == by_hand and reply.audio is None and reply.finish_reason in ("stop", "length")


def test_a_spoken_turn_is_heard_answered_and_said(model, example_wav):
    from unisono.modes.tts import TTSOptions, speak

    chat = Conversation(model, ChatOptions(seed=3, max_tokens=16))
    reply = chat.turn(str(example_wav))
    assert reply.user_text == model.transcribe(str(example_wav)).text.strip()
    stages = list(reply.seconds)
    assert stages[:2] == ["heard", "replied"] and sorted(reply.seconds.values()) == list(reply.seconds.values())
    if reply.text:
        said = speak(model, reply.text, options=TTSOptions(seed=3))
        assert np.array_equal(reply.audio, said.audio)  # the reply spoken by the TTS mode, same seed


def test_bad_turns_are_refused(model):
    chat = Conversation(model, ChatOptions(speak=False))
    with pytest.raises(ValueError, match="nothing was said"):
        chat.turn(np.zeros(16000, np.float32))
    with pytest.raises(ValueError, match="empty"):
        chat.turn("   ")
    assert chat.history == []  # a refused turn leaves no trace
    with pytest.raises(ValueError, match="max_tokens"):
        ChatOptions(max_tokens=0)


def test_the_reply_hears_the_turns_audio(model, example_wav):
    # the turn's audio is in the prompt (as the chat training task puts it), its words in the history
    from tests.serve.conftest import greedy_reply

    from unisono.audio.io import load_audio

    audio = load_audio(example_wav)
    chat = Conversation(model, ChatOptions(system="Be brief.", speak=False, temperature=0.0, max_tokens=16))
    reply = chat.turn(audio)
    expected = greedy_reply(model, [Turn("system", ["Be brief."]), Turn("user", [None])], 16, audio=audio)[0]
    assert reply.text == expected.strip()
    assert chat.history == [Turn("user", [reply.user_text]), Turn("assistant", [reply.text])]
