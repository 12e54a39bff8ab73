import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unisono.model.vocab as vocab_module
from unisono.model.vocab import PAD_MULTIPLE, SPECIAL_SLOTS, SPECIAL_TOKENS, Audio, Special, Speech, Turn, Vocab


@pytest.fixture
def vocab(tiny_tokenizer):
    return Vocab(tiny_tokenizer, n_speech_tokens=50)


def test_layout_text_then_special_then_speech(vocab, tiny_tokenizer):
    n_text = tiny_tokenizer.get_vocab_size()
    assert vocab.n_text == n_text and vocab.layout == 2
    assert vocab.id(SPECIAL_TOKENS[0]) == n_text
    assert vocab.speech_offset == n_text + SPECIAL_SLOTS  # the named tokens, then reserved slots
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


def test_adding_a_special_token_keeps_every_speech_id(vocab, tiny_tokenizer):
    newer = Vocab(tiny_tokenizer, n_speech_tokens=50, special_tokens=SPECIAL_TOKENS + ("laugh",))
    assert [newer.speech_id(c) for c in range(50)] == [vocab.speech_id(c) for c in range(50)]
    assert newer.size == vocab.size
    assert all(newer.id(n) == vocab.id(n) for n in SPECIAL_TOKENS)
    assert vocab.special_offset + len(SPECIAL_TOKENS) == newer.id("laugh") < newer.speech_offset
    assert newer.token_str(newer.id("laugh")) == "<|laugh|>"


def test_a_checkpoint_read_by_a_version_with_one_more_special_token(vocab, tiny_tokenizer, tmp_path, monkeypatch):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    vocab.save(tmp_path / "v2")
    # layout 1 (no reserved slots), as checkpoints written before layout 2 are
    legacy = Vocab(tiny_tokenizer, n_speech_tokens=50, special_slots=None)
    legacy.save(tmp_path / "v1")
    monkeypatch.setattr(vocab_module, "SPECIAL_TOKENS", SPECIAL_TOKENS + ("laugh",))

    again = Vocab.load(tmp_path / "v2", n_speech_tokens=50)
    assert [again.speech_id(c) for c in range(50)] == [vocab.speech_id(c) for c in range(50)]
    assert again.id("laugh") == vocab.special_offset + len(SPECIAL_TOKENS)

    old = Vocab.load(tmp_path / "v1", n_speech_tokens=50, layout=1, special_slots=None)
    assert old.speech_offset == tiny_tokenizer.get_vocab_size() + len(SPECIAL_TOKENS)  # where it was trained
    assert [old.speech_id(c) for c in range(50)] == [legacy.speech_id(c) for c in range(50)]
    with pytest.raises(KeyError, match="newer than this vocabulary"):
        old.id("laugh")


def test_shipped_vocabulary_is_layout_1_with_its_own_ids():
    import json

    from unisono.model.config import UnisonoConfig
    from unisono.model.unisono import default_model_path

    path = default_model_path()
    config = UnisonoConfig.from_dict(json.loads((path / "config.json").read_text()))
    assert (config.vocab.layout, config.vocab.special_slots) == (1, None)  # its config.json predates layouts
    vc = config.vocab
    shipped = Vocab.load(path, vc.tokenizer_file, vc.n_speech_tokens, layout=vc.layout, special_slots=vc.special_slots)
    meta = json.loads((path / "vocab.json").read_text())
    assert shipped.speech_offset == meta["n_text"] + len(meta["special_tokens"])
    assert shipped.size == 8128  # the shipped embedding table's rows: 4000 + 19 + 4096, padded to 64


def test_unknown_layout_and_too_many_tokens_are_clear(tiny_tokenizer, tmp_path):
    Vocab(tiny_tokenizer).save(tmp_path)
    with pytest.raises(ValueError, match="layout 3 is unknown"):
        Vocab.load(tmp_path, layout=3)
    with pytest.raises(ValueError, match="do not fit the 4 reserved slots"):
        Vocab(tiny_tokenizer, special_slots=4)
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        Vocab(tiny_tokenizer, text_slots=10)
