"""TTS mode on the embedded model: the length guard, the streamed audio against the codec's
offline detokenizer, seeds, the scheduler path, voices and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unisono.modes.tts import (MAX_SENTENCE_CHARS, PAUSE_S, TTSOptions, max_speech_tokens, speak, speak_stream,
                               split_sentences, text_warnings, voice_embedding, voice_prompt)


@pytest.fixture(scope="module")
def model():
    from unisono.model.unisono import Unisono

    return Unisono.load()


def test_sentences_are_split_in_english_and_mandarin():
    assert split_sentences("Hello there.  How are you?\nFine!") == ["Hello there.", "How are you?", "Fine!"]
    assert split_sentences("你好。今天天气很好！") == ["你好。", "今天天气很好！"]
    assert split_sentences("   ") == []
    assert max_speech_tokens("你好") > max_speech_tokens("hi")  # a character takes longer than a letter


def test_audio_is_the_codec_of_the_tokens_and_the_guard_holds(model):
    text = "Hello there. It is a fine day."
    speech = speak(model, text, options=TTSOptions(seed=3))
    assert speech.sentences == ["Hello there.", "It is a fine day."]
    codec = model.speech_codec
    speaker = voice_embedding(model, "lj")
    at = 0
    for i, (sentence, codes) in enumerate(zip(speech.sentences, speech.tokens)):
        guard = max_speech_tokens(sentence)
        assert 0 < len(codes) <= guard
        assert all(0 <= c < model.vocab.n_speech for c in codes)
        if len(codes) == guard:  # a runaway is cut at the guard, and said so
            assert any(f"sentence {i + 1} reached its length guard" in w for w in speech.warnings)
        offline = codec.detokenize(torch.tensor(codes), speaker)
        assert np.allclose(speech.audio[at : at + len(offline)], offline, atol=1e-4)
        at += len(offline) + (int(PAUSE_S * 16000) if i < len(speech.sentences) - 1 else 0)
    assert at == len(speech.audio)
    assert speech.duration == pytest.approx(len(speech.audio) / 16000)


def test_seeds_repeat_voices_change_only_the_sound(model, real_speech_dir):
    a = speak(model, "Good morning.", options=TTSOptions(seed=11))
    b = speak(model, "Good morning.", options=TTSOptions(seed=11))
    c = speak(model, "Good morning.", options=TTSOptions(seed=12))
    assert a.tokens == b.tokens and np.array_equal(a.audio, b.audio)
    assert a.tokens != c.tokens
    another_speaker = sorted((real_speech_dir / "an4_test" / "wav").glob("*.wav"))[0]
    other = speak(model, "Good morning.", voice=another_speaker, options=TTSOptions(seed=11))
    assert other.tokens == a.tokens and not np.allclose(other.audio, a.audio)


def test_the_scheduler_gives_the_tokens_a_lone_session_gives(model):
    from unisono.decode.scheduler import Scheduler
    from unisono.model.unisono import Unisono

    exact = Unisono.load().double()  # float64: a batch of one rounds as a lone session does
    alone = speak(exact, "One two three.", options=TTSOptions(seed=5))
    with Scheduler(exact) as scheduler:
        scheduled = speak(exact, "One two three.", options=TTSOptions(seed=5), scheduler=scheduler)
    assert scheduled.tokens == alone.tokens


def test_streaming_gives_audio_before_the_end(model):
    chunks = list(speak_stream(model, "This is a longer sentence to speak.", options=TTSOptions(seed=1)))
    assert len(chunks) > 2 and all(c.dtype == np.float32 for c in chunks)


def test_bad_requests_are_refused(model):
    with pytest.raises(ValueError, match="no text"):
        speak(model, "  \n ")
    with pytest.raises(ValueError, match="no voice named 'alloy'.*lj"):
        speak(model, "Hi.", voice="alloy")
    with pytest.raises(ValueError, match="speed"):
        TTSOptions(speed=3.0)
    assert TTSOptions(speed=0.7, instruct="Sound happy.").instruction() == "Sound happy. Speak slowly."


def test_text_the_model_cannot_read_is_cut_dropped_or_named():
    long = split_sentences("one, two " * 3000)  # 24,000 characters and no full stop
    assert len(long) > 50 and all(len(p) <= MAX_SENTENCE_CHARS for p in long)
    assert "".join(long).replace(" ", "") == ("one, two " * 3000).replace(" ", "")  # nothing lost
    assert split_sentences("Hi there. 🙂🙂 !!! ... OK.") == ["Hi there.", "OK."]
    assert split_sentences("🙂 ... !!!") == []
    assert "CYRILLIC" in text_warnings("Привет, world", None)[0]
    assert text_warnings("Café au lait, 你好。", "Speak slowly.") == []
    assert "none of the controls" in text_warnings("Hi.", "Sing it like an opera star.")[0]


def test_a_voice_prompt_opens_the_answer_and_is_not_played(model, real_speech_dir):
    from unisono.audio.io import load_audio
    from unisono.decode.session import Session
    from unisono.modes.tts import _session_config, tts_prompt

    reference = sorted((real_speech_dir / "an4_test" / "wav").glob("*.wav"))[0]
    audio = load_audio(reference, 16000)
    given = voice_prompt(model, reference, "yes")
    assert given == model.speech_codec.tokenize(audio).tolist() and len(given) > 10
    options = TTSOptions(seed=4, voice_text="yes")
    speech = speak(model, "Good morning.", voice=reference, options=options)
    # the same decode by hand: the prompt's text, then <|speech_start|> and the reference's tokens
    vocab = model.vocab
    ids = vocab.encode_prompt(tts_prompt("Good morning.", None, "yes")).ids + [vocab.id("speech_start")]
    ids += [vocab.speech_offset + c for c in given]
    session = Session(model, _session_config(model, "Good morning.", options, 0))
    session.prefill(model.embed_prompt(torch.tensor([ids]))[0])
    by_hand = [t - vocab.speech_offset for t in session.tokens()]
    assert speech.tokens == [by_hand]
    assert len(speech.audio) == 640 * len(by_hand)  # 40 ms a token: only the new speech, not the reference again


def test_bad_voices_are_refused_with_their_reason(model, tmp_path, real_speech_dir):
    reference = sorted((real_speech_dir / "an4_test" / "wav").glob("*.wav"))[0]
    with pytest.raises(ValueError, match="reference recording itself"):
        speak(model, "Hi.", voice="lj", options=TTSOptions(voice_text="hello"))
    with pytest.raises(ValueError, match="transcript is empty"):
        speak(model, "Hi.", voice=reference, options=TTSOptions(voice_text="  "))
    long = np.tile(np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 30)
    with pytest.raises(ValueError, match="at most 20 s"):
        speak(model, "Hi.", voice=long, options=TTSOptions(voice_text="hello"))
    corrupt = tmp_path / "bad.wav"
    corrupt.write_bytes(b"RIFF\x00\x00not audio at all")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    for bad in (corrupt, empty):
        with pytest.raises((ValueError, OSError)):
            speak(model, "Hi.", voice=bad)
    with pytest.raises(ValueError, match="too short"):
        speak(model, "Hi.", voice=np.zeros(800, np.float32))
    ten_minutes = np.tile(load_first_second(reference), 600)  # its first 6 s make the voice
    assert speak(model, "Hi.", voice=ten_minutes, options=TTSOptions(seed=1)).duration > 0
    one_second = load_first_second(reference)
    assert speak(model, "Hi.", voice=one_second, options=TTSOptions(seed=1)).duration > 0


def load_first_second(path) -> np.ndarray:
    from unisono.audio.io import load_audio

    return load_audio(path, 16000)[:16000]


def test_a_saved_copy_keeps_its_codec_and_speaks_alike(model, tmp_path):
    from unisono.model.unisono import Unisono

    copy = Unisono.load(model.save(tmp_path / "copy"))  # as a training run writes a model it started from
    assert (tmp_path / "copy" / "speech" / "codec.safetensors").is_file()
    a = speak(model, "Good evening.", options=TTSOptions(seed=2))
    b = speak(copy, "Good evening.", options=TTSOptions(seed=2))
    assert a.tokens == b.tokens and np.array_equal(a.audio, b.audio)
