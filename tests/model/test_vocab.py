import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unisono.model.vocab import PAD_MULTIPLE, SPECIAL_TOKENS, Audio, Special, Speech, Turn, Vocab


@pytest.fixture
def vocab(tiny_tokenizer):
    return Vocab(tiny_tokenizer, n_speech_tokens=50)


def test_layout_text_then_special_then_speech(vocab, tiny_tokenizer):
    n_text = tiny_tokenizer.get_vocab_size()
    assert vocab.n_text == n_text
    assert vocab.id(SPECIAL_TOKENS[0]) == n_text
    assert vocab.speech_offset == n_text + len(SPECIAL_TOKENS)
    assert vocab.size % PAD_MULTIPLE == 0 and vocab.size >= vocab.speech_offset + 50
    assert vocab.is_speech(vocab.speech_id(0)) and not vocab.is_text(vocab.speech_id(0))
    with pytest.raises(ValueError, match="outside the codebook"):
        vocab.speech_id(50)


def test_expansion_keeps_text_and_special_ids(vocab):
    bigger = vocab.with_speech_tokens(500)
    assert bigger.n_text == vocab.n_text
    assert all(bigger.id(n) == vocab.id(n) for n in SPECIAL_TOKENS)
    assert bigger.speech_id(7) == vocab.speech_id(7)


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=0, max_size=40))
def test_text_round_trip(tiny_tokenizer, text):
    vocab = Vocab(tiny_tokenizer, 8)
    # byte-level BPE: every string survives, up to surrounding white space
    assert vocab.decode_text(vocab.encode_text(text)) == text.strip()


def test_prompt_format_asr(vocab):
    p = vocab.encode_prompt([Turn("user", [Special("asr"), Audio(3)])])
    names = [vocab.token_str(i) for i in p.ids]
    assert names == ["<|user|>", "<|asr|>", "<|audio_start|>", "<|audio|>", "<|audio|>", "<|audio|>", "<|audio_end|>", "<|end|>", "<|assistant|>"]
    assert p.audio_spans == [(3, 3)]
    assert p.target_start == len(p.ids)


def test_prompt_format_training_targets_and_speech(vocab):
    turns = [
        Turn("system", ["calm voice"]),
        Turn("user", [Special("tts"), "hello"]),
        Turn("assistant", [Speech((1, 2, 3))]),
    ]
    p = vocab.encode_prompt(turns)
    assert vocab.token_str(p.ids[p.target_start - 1]) == "<|assistant|>"
    assert vocab.speech_codes(p.ids[p.target_start :]) == [1, 2, 3]
    assert p.ids[-1] == vocab.end_id
    with pytest.raises(ValueError, match="role"):
        vocab.encode_prompt([Turn("narrator", [])])  # type: ignore[arg-type]


def test_save_load(vocab, tmp_path):
    vocab.save(tmp_path)
    again = Vocab.load(tmp_path, n_speech_tokens=50)
    assert again.size == vocab.size and again.encode_text("the fox") == vocab.encode_text("the fox")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        Vocab.load(tmp_path / "missing")
