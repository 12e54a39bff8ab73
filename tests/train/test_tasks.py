"""Task builders: the prompts are the ones the modes run, the targets are the assistant's tokens."""

from __future__ import annotations

import numpy as np
import pytest

from unisono.data.manifest import Utterance
from unisono.model.vocab import Vocab
from unisono.modes.asr import asr_prompt
from unisono.train.tasks import TASKS, TaskContext, build_example, check_tasks, voice_instruction


@pytest.fixture(scope="module")
def vocab(tiny_tokenizer) -> Vocab:
    return Vocab(tiny_tokenizer, 64)


def row(i: int, text="the quick brown fox", lang="en", codes=(1, 2, 3), **meta) -> Utterance:
    return Utterance(f"u{i}", f"u{i}.wav", text, lang, 1.0, speaker="s", meta={"speech_tokens": list(codes), **meta} if codes else meta)


def ctx(r, partners=(), n_audio=7, seed=0, p_lang=0.5) -> TaskContext:
    return TaskContext(r, list(partners), n_audio, np.random.default_rng(seed), p_lang)


def targets(example) -> list[int]:
    return example.ids[example.target_start :]


@pytest.mark.parametrize("p_lang, with_language", [(0.0, False), (1.0, True)])
def test_asr_prompt_is_the_inference_prompt(vocab, p_lang, with_language):
    r = row(0)
    ex = build_example("asr", ctx(r, p_lang=p_lang), vocab, row_index=5)
    inference = vocab.encode_prompt(asr_prompt(7, "en" if with_language else None)).ids  # ends with <|assistant|>
    assert ex.ids[: ex.target_start] == inference
    assert targets(ex) == vocab.encode_text(r.text) + [vocab.end_id]
    assert ex.clip == 5 and ex.ids.count(vocab.audio_id) == 7


def test_language_token_drawn_with_its_probability(vocab):
    with_lang = sum(vocab.id("en") in build_example("asr", ctx(row(0), seed=s), vocab, 0).ids for s in range(400))
    assert 160 < with_lang < 240  # p = 0.5


def test_tts_targets_are_the_speech_tokens(vocab):
    r = row(0, codes=(5, 0, 63))
    ex = build_example("tts", ctx(r), vocab, 0)
    assert vocab.speech_codes(targets(ex)) == [5, 0, 63]
    assert targets(ex)[0] == vocab.id("speech_start") and targets(ex)[-2:] == [vocab.id("speech_end"), vocab.end_id]
    assert vocab.id("tts") in ex.ids[: ex.target_start] and ex.clip is None
    assert build_example("tts", ctx(row(0, codes=())), vocab, 0) is None  # no speech tokens, no TTS


def test_speech_targets_are_only_clean_voices(vocab):
    # noise, reverb or a speed change would be learned as the voice (and make `rate` wrong); gain is harmless
    louder = row(0, augment=[{"kind": "gain", "db": -3.0}])
    noisy = row(1, augment=[{"kind": "gain", "db": 1.0}, {"kind": "reverb", "rt60": 0.4}])
    faster = row(2, augment=[{"kind": "speed", "factor": 1.1}])
    assert build_example("tts", ctx(louder), vocab, 0) is not None
    for r in (noisy, faster):
        assert build_example("tts", ctx(r), vocab, 0) is None
        assert build_example("tts-instruct", ctx(r), vocab, 0) is None
        assert build_example("asr", ctx(r), vocab, 0) is not None  # still heard for ASR
    assert build_example("continue", ctx(louder, [noisy]), vocab, 0) is None
    assert build_example("continue", ctx(louder, [louder]), vocab, 0) is not None


def test_prompted_tts_learns_only_the_speech_after_the_voice_prompt(vocab):
    reference, target = row(0, text="first words", codes=(4, 5)), row(1, text="then these", codes=(6, 7, 8))
    ex = build_example("tts-prompted", ctx(reference, [target]), vocab, 0)
    prompt = vocab.decode_text(ex.ids[: ex.target_start])
    assert "first words then these" in prompt
    assert vocab.speech_codes(ex.ids[: ex.target_start]) == [4, 5]  # given after <|speech_start|>
    assert vocab.speech_codes(targets(ex)) == [6, 7, 8] and targets(ex)[-2:] == [vocab.id("speech_end"), vocab.end_id]
    assert ex.ids[ex.target_start - 3] == vocab.id("speech_start")
    assert build_example("tts-prompted", ctx(reference), vocab, 0) is None  # no following utterance of the speaker
    noisy = row(1, text="then these", codes=(6,), augment=[{"kind": "noise", "snr_db": 5}])
    assert build_example("tts-prompted", ctx(reference, [noisy]), vocab, 0) is None


def test_instructive_tts_takes_the_row_instruction_or_its_synthesis_parameters(vocab):
    assert voice_instruction(row(0, instruction="Whisper it.")) == "Whisper it."
    # as the data engine records them: rate relative to the voice's default, espeak-ng pitch 0..99
    assert voice_instruction(row(0, synth={"rate": 0.8, "wpm": 140, "pitch": 80})) == "Speak slowly and with a high voice."
    assert voice_instruction(row(0, synth={"rate": 1.2, "wpm": 210})) == "Speak quickly."
    assert voice_instruction(row(0, synth={"rate": 1.0, "semitones": -3.0})) == "Speak at a natural pace and with a low voice."
    assert voice_instruction(row(0)) is None
    ex = build_example("tts-instruct", ctx(row(0, synth={"rate": 240})), vocab, 0)
    assert ex.ids[0] == vocab.id("system") and vocab.decode_text(ex.ids[: ex.target_start]).startswith("Speak quickly")
    assert build_example("tts-instruct", ctx(row(0)), vocab, 0) is None


def test_continuation_interleaves_text_and_speech_of_following_utterances(vocab):
    a, b, c = row(0, "one two", codes=(1,)), row(1, "three four", codes=(2, 2)), row(2, "five six", codes=(3, 3, 3))
    seen_modes = set()
    for seed in range(30):
        ex = build_example("continue", ctx(a, [b, c], seed=seed), vocab, 0)
        prompt, target = ex.ids[: ex.target_start], targets(ex)
        first = "text" if vocab.decode_text(prompt) == "one two" else "speech"
        assert first == "text" or vocab.speech_codes(prompt) == [1]
        # the continuation is b (and maybe c), each as its text or its speech tokens, in order
        codes, text = vocab.speech_codes(target), vocab.decode_text(target)
        assert codes in ([], [2, 2], [3, 3, 3], [2, 2, 3, 3, 3])
        assert text.replace(" ", "") in ("", "threefour", "fivesix", "threefourfivesix")
        seen_modes.add((first, bool(codes), bool(text)))
    assert len(seen_modes) >= 4
    assert build_example("continue", ctx(a, []), vocab, 0) is None


def test_s2s_answers_with_text_then_speech(vocab):
    q, a = row(0, "how are you", codes=(4, 4)), row(1, "fine thanks", codes=(9,))
    ex = build_example("s2s", ctx(q, [a]), vocab, 0)
    assert vocab.speech_codes(ex.ids[: ex.target_start]) == [4, 4] and vocab.id("chat") in ex.ids
    t = targets(ex)
    assert vocab.decode_text(t) == "fine thanks" and vocab.speech_codes(t) == [9]
    assert t.index(vocab.id("speech_start")) > max(i for i, x in enumerate(t) if vocab.is_text(x))
    assert build_example("s2s", ctx(q, []), vocab, 0) is None


def test_text_task_and_mandarin(vocab):
    r = row(0, "北京是中国的首都", lang="zh")
    ex = build_example("text", ctx(r), vocab, 0)
    assert vocab.decode_text(targets(ex)) == "北京是中国的首都"
    assert vocab.id("zh") in build_example("asr", ctx(r, p_lang=1.0), vocab, 0).ids


def test_unknown_tasks_are_refused():
    with pytest.raises(ValueError, match="unknown task"):
        check_tasks({"asr": 1.0, "singing": 1.0})
    with pytest.raises(ValueError, match="no positive weight"):
        check_tasks({"asr": 0.0})
    assert set(TASKS) >= {"asr", "tts", "tts-instruct", "continue", "s2s", "text"}


def test_chat_learns_the_reply_to_a_spoken_turn_in_the_chat_modes_prompt(vocab):
    # what is trained is what `unisono.modes.chat.Conversation` decodes from: persona, earlier turns
    # as text, this turn as audio; only the reply (and its <|end|>) is learned
    from unisono.model.vocab import Audio, Turn

    dialogue = {"persona": "You are Ava.", "history": [["user", "Who are you?"], ["assistant", "I'm Ava."]],
                "reply": "I live in Oslo."}
    r = row(0, text="Where do you live?", codes=None, dialogue=dialogue)
    ex = build_example("chat", ctx(r, n_audio=9), vocab, row_index=3)
    mode = [Turn("system", ["You are Ava."]), Turn("user", ["Who are you?"]), Turn("assistant", ["I'm Ava."]),
            Turn("user", [Audio(9)])]
    assert ex.ids[: ex.target_start] == vocab.encode_prompt(mode).ids  # ends with <|assistant|>
    assert targets(ex) == vocab.encode_text("I live in Oslo.") + [vocab.end_id]
    assert ex.clip == 3 and ex.ids.count(vocab.audio_id) == 9
    assert TASKS["chat"](ctx(row(1, codes=None))) is None  # a row without a reply is no chat example
