"""TextStream: the deltas add up to the decoded text and never hold half a character."""

from __future__ import annotations

from types import SimpleNamespace

from unisono.decode.text_stream import TextStream


def test_deltas_add_up_and_split_characters_wait(tiny_tokenizer):
    text = "Hello 你好, wörld 🎉 end"
    ids = tiny_tokenizer.encode(text).ids
    vocab = SimpleNamespace(decode_text=lambda t: tiny_tokenizer.decode(t))
    stream = TextStream(vocab)
    deltas = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(deltas) == tiny_tokenizer.decode(ids)
    assert not any("\ufffd" in d for d in deltas)
    assert sum(1 for d in deltas if d == "") > 0  # some tokens end inside a character
