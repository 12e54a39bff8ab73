"""Text sources: fortunes, docs, gettext catalogues and HTML built here as small samples."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from unisono.data.text import (
    Passage,
    TextConfig,
    clean_sentence,
    collect_sentences,
    debian_owners,
    dedup_key,
    language_of,
    read_sentences,
    split_sentences,
    write_sentences,
)


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU .mo catalogue (the format msgfmt writes), UTF-8, without a hash table."""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(entries)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(entries[k].encode() + b"\0" for k in keys)
    n = len(keys)
    header = 7 * 4
    ids_start = header + 16 * n
    strs_start = ids_start + len(ids)
    orig, trans, off_i, off_s = [], [], ids_start, strs_start
    for k in keys:
        orig += [len(k.encode()), off_i]
        off_i += len(k.encode()) + 1
        trans += [len(entries[k].encode()), off_s]
        off_s += len(entries[k].encode()) + 1
    data = struct.pack("<7I", 0x950412DE, 0, n, header, header + 8 * n, 0, 0)
    data += struct.pack(f"<{2 * n}I", *orig) + struct.pack(f"<{2 * n}I", *trans) + ids + strs
    path.write_bytes(data)


@pytest.fixture()
def sample_roots(tmp_path: Path) -> TextConfig:
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    (fortunes / "wisdom").write_text(
        "A journey of 1000 miles begins with a single step.\n\t\t-- Lao Tzu\n%\n"
        "\x1b[32mThe early bird gets the worm.\x1b[m  The second mouse gets the cheese.\n%\n"
        "A journey of one thousand miles begins with a single step!\n%\n"  # a duplicate once spoken
        "See http://example.org for more.\n%\n"
        "    ___\n   (o o)\n  (  V  )\n%\n")
    (fortunes / "wisdom.dat").write_bytes(b"\0\1binary")
    (fortunes / "tang").write_text("\x1b[32m《静夜思》\x1b[m\n\x1b[33m作者：李白\x1b[m\n床前明月光，\n疑是地上霜。\n%\n")
    docs = tmp_path / "doc" / "pkg"
    docs.mkdir(parents=True)
    with gzip.open(docs / "README.gz", "wt") as f:
        f.write("Installation is easy.  Run the configure script first, then type make.\n\n"
                "    $ ./configure --prefix=/usr\n\nThis package is maintained by volunteers.\n")
    (docs / "changelog").write_text("This line is in a changelog and must be skipped.\n")
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "ch01.zh-cn.html").write_text(
        "<html><body><p>这是一个很好的系统。它运行了<code>apt</code>命令。</p><pre>不要读这个代码块。</pre>"
        "<li>大家都是志愿者。</li></body></html>", encoding="utf-8")
    loc = tmp_path / "locale"
    loc.mkdir()
    write_mo(loc / "demo.mo", {"Could not open the file.": "无法打开文件。", "Deleted %s files": "删除了 %s 个文件"})
    (loc / "broken.mo").write_bytes(b"not a catalogue")  # skipped, not fatal
    (loc / "truncated.mo").write_bytes((loc / "demo.mo").read_bytes()[:40])
    info = tmp_path / "info"
    info.mkdir()
    (info / "fortunes-min.list").write_text(f"{fortunes}\n{fortunes / 'wisdom'}\n")
    return TextConfig(sources=("fortunes", "docs", "gettext"), fortune_dir=fortunes, doc_dir=tmp_path / "doc",
                      reference_dir=ref, locale_dir=loc, dpkg_info_dir=info)


def test_collect_from_samples(sample_roots: TextConfig, tmp_path: Path) -> None:
    sentences = collect_sentences(sample_roots)
    by_text = {s.text: s for s in sentences}
    assert set(by_text) == {
        "A journey of one thousand miles begins with a single step.",
        "The early bird gets the worm.",
        "The second mouse gets the cheese.",
        "床前明月光，疑是地上霜。",
        "Installation is easy.",
        "Run the configure script first, then type make.",
        "This package is maintained by volunteers.",
        "大家都是志愿者。",
        "这是一个很好的系统。",  # the sentence after it lost a code span and is dropped
        "Could not open the file.",
        "无法打开文件。",
    }
    first = by_text["A journey of one thousand miles begins with a single step."]
    assert first.text_raw == "A journey of 1000 miles begins with a single step."
    assert first.source == f"debian:fortunes-min:{sample_roots.fortune_dir / 'wisdom'}#0"
    assert by_text["床前明月光，疑是地上霜。"].language == "zh"
    assert by_text["无法打开文件。"].source.startswith(f"debian:demo:{sample_roots.locale_dir / 'demo.mo'}#msgstr-")
    assert by_text["Installation is easy."].source.endswith("README.gz#p0")
    # Ids are stable and unique; the file round-trips.
    assert len({s.id for s in sentences}) == len(sentences)
    assert collect_sentences(sample_roots) == sentences
    path = write_sentences(tmp_path / "s.jsonl", sentences)
    assert read_sentences(path) == sentences


def test_missing_roots_give_nothing(tmp_path: Path) -> None:
    cfg = TextConfig(sources=("fortunes", "docs", "gettext"), fortune_dir=tmp_path / "x", doc_dir=tmp_path / "y",
                     reference_dir=tmp_path / "z", locale_dir=tmp_path / "w", dpkg_info_dir=tmp_path / "v")
    assert collect_sentences(cfg) == []
    with pytest.raises(ValueError, match="unknown text source"):
        collect_sentences(TextConfig(sources=("wikipedia",)))


def test_debian_owners(sample_roots: TextConfig) -> None:
    owners = debian_owners(sample_roots.dpkg_info_dir)
    assert owners[str(sample_roots.fortune_dir / "wisdom")] == "fortunes-min"


@pytest.mark.parametrize("text, language", [
    ("Hello there, world.", "en"), ("你好，世界。", "zh"), ("Debian 是一个很好的操作系统", "zh"), ("Debian 系统", None), ("1234 !!", None), ("Привет мир", None),
])
def test_language_of(text: str, language: str | None) -> None:
    assert language_of(text) == language


def test_split_sentences() -> None:
    assert split_sentences("Dr. Smith went home. He slept!", "en") == ["Dr. Smith went home.", "He slept!"]
    assert split_sentences("我是学生。你呢？他说：“好！”然后", "zh") == ["我是学生。", "你呢？", "他说：“好！”"]
    assert split_sentences("不要跟随符号链接", "zh") == ["不要跟随符号链接"]


@pytest.mark.parametrize("sentence", [
    "too short.", "no capital letter here.", "NO SHOUTING IN HEADINGS PLEASE.", "Missing the full stop",
    "Tag %s does not exist here.", "Edit the file config.txt first.", "Use {braces} in code here.",
    "Set $HOME to something else.", "The init-ex- pression is evaluated first.",
])
def test_clean_rejects_written_only_text(sentence: str) -> None:
    assert clean_sentence(sentence, "en", TextConfig()) is None


def test_clean_length_bounds() -> None:
    cfg = TextConfig(max_words_en=5, max_chars_zh=5)
    assert clean_sentence("One two three four five.", "en", cfg)
    assert clean_sentence("One two three four five six.", "en", cfg) is None
    assert clean_sentence("一二三四五。", "zh", cfg) == "一二三四五。"
    assert clean_sentence("一二三四五六。", "zh", cfg) is None


def test_dedup_key_ignores_case_and_punctuation() -> None:
    assert dedup_key("Hello, World!") == dedup_key("hello world.") != dedup_key("hello word")
    assert Passage("x", "y").source == "y"
