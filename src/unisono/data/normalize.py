"""Spoken-form normalisation: rewrite written text as it is read aloud, so transcripts match speech.

A synthesiser reads "3.5%" as "three point five percent"; the transcript must say the same, or
the model learns that the sound of "three point five percent" is spelled "3.5%" one day and
"three point five percent" the next. Each function returns the spoken form, or None when the
sentence keeps something with no single reading (a stray digit, a symbol, a URL): such sentences
are dropped rather than transcribed wrongly.

English uses num2words (cardinals, ordinals, years, decimals); Mandarin uses cn2an, which
rewrites Arabic numerals, dates and percentages as Chinese numerals
("2023年10月5日" -> "二零二三年十月五日", "12%" -> "百分之十二").

>>> normalize_en("On May 3rd 1999 it cost $4.50, up 12%.")
'On May third nineteen ninety-nine it cost four dollars fifty cents, up twelve percent.'
>>> normalize_zh("增长了12%，共1500人")
'增长了百分之十二，共一千五百人'
"""

from __future__ import annotations

import re
import unicodedata

# Curly quotes, dashes and ellipses typed by humans -> the plain forms the rest expects.
_PUNCT_MAP = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                            "\u2014": " - ", "\u2026": "...", "\u00a0": " "})

_ABBREVIATIONS = {
    "Mr.": "Mister", "Mrs.": "Missus", "Dr.": "Doctor", "Prof.": "Professor", "St.": "Saint",
    "e.g.": "for example", "i.e.": "that is", "etc.": "et cetera", "vs.": "versus", "approx.": "approximately",
}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}
_SYMBOLS = {"&": " and ", "%": " percent", "+": " plus ", "@": " at ", "°": " degrees"}

# What may remain in a spoken English sentence: letters, spaces and reading punctuation.
_EN_SPOKEN = re.compile(r"^[A-Za-z .,;:!?'\"()-]+$")
# Han characters and Chinese punctuation; no Latin letters (the Mandarin voice reads them as
# pinyin, so the audio would not match the text) and no digits.
_ZH_SPOKEN = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff\u3000-\u303f\uff01-\uff1f\uff08\uff09\u201c\u201d\u2018\u2019·、—…\s]+$")


def _n2w(value: str | int | float, **kw) -> str:
    from num2words import num2words

    return num2words(value, lang="en", **kw)


def _currency(m: re.Match) -> str:
    unit, units, sub, subs = _CURRENCY[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    out = f"{_n2w(whole)} {unit if whole == 1 else units}"
    if m.group(3):
        cents = int(m.group(3).ljust(2, "0")[:2])
        if cents:
            out += f" {_n2w(cents)} {sub if cents == 1 else subs}"
    return out


def _iso_date(m: re.Match) -> str:
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)
    return f"{_MONTHS[month - 1]} {_n2w(day, to='ordinal')}, {_n2w(year, to='year')}"


def _time(m: re.Match) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    if hour > 23 or minute > 59:
        return m.group(0)
    if minute == 0:
        return f"{_n2w(hour)} o'clock"
    return f"{_n2w(hour)} {'oh ' + _n2w(minute) if minute < 10 else _n2w(minute)}"


def _integer(m: re.Match) -> str:
    digits = m.group(0).replace(",", "")
    value = int(digits)
    # A four-digit number between 1100 and 2099 standing alone is almost always a year
    # ("in 1999"), read in pairs; "2000" to "2009" read as cardinals in both readings.
    if len(digits) == 4 and 1100 <= value <= 2099 and "," not in m.group(0):
        return _n2w(value, to="year")
    if len(digits) > 1 and digits.startswith("0"):
        return " ".join(_n2w(int(d)) for d in digits)  # "007" is read digit by digit
    return _n2w(value)


def normalize_en(text: str) -> str | None:
    """English written form -> spoken form; None when something unreadable remains."""
    s = unicodedata.normalize("NFKC", text).translate(_PUNCT_MAP)
    s = re.sub(r"\s+", " ", s).strip()
    for abbr, full in _ABBREVIATIONS.items():
        s = re.sub(rf"(?<![A-Za-z]){re.escape(abbr)}", full, s)
    s = re.sub(r"\b(\d{4})-(\d{2})-(\d{2})\b", _iso_date, s)
    s = re.sub(r"\b(\d{1,2}):(\d{2})\b", _time, s)
    s = re.sub(r"([$£€])(\d[\d,]*)(?:\.(\d{1,2}))?\b", _currency, s)
    s = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: _n2w(int(m.group(1)), to="ordinal"), s)
    s = re.sub(r"(?<![\d.])(\d+)\.(\d+)(?![\d.])",
               lambda m: f"{_n2w(int(m.group(1)))} point {' '.join(_n2w(int(d)) for d in m.group(2))}", s)
    s = re.sub(r"(?<![\d.])-(\d)", r"minus \1", s)
    s = re.sub(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+\b", _integer, s)
    for sym, word in _SYMBOLS.items():
        s = s.replace(sym, word)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s+([.,;:!?])", r"\1", s)
    return s if s and _EN_SPOKEN.match(s) and re.search(r"[A-Za-z]", s) else None


def normalize_zh(text: str) -> str | None:
    """Mandarin written form -> spoken form (simplified, Chinese numerals); None if Latin or digits remain."""
    import cn2an

    s = unicodedata.normalize("NFKC", text)
    # NFKC turns full-width punctuation into ASCII; Chinese text reads better with its own.
    s = s.translate(str.maketrans({",": "，", "!": "！", "?": "？", ";": "；", ":": "：", "(": "（", ")": "）"}))
    s = re.sub(r"\s+", "", s)
    if re.search(r"\d", s):
        try:
            s = cn2an.transform(s, "an2cn")
        except (ValueError, KeyError, IndexError):  # cn2an refuses some digit strings
            return None
    s = _to_simplified(s)
    return s if s and _ZH_SPOKEN.match(s) and re.search(r"[\u4e00-\u9fff]", s) else None


def _to_simplified(s: str) -> str:
    return _converter().convert(s)


_OPENCC = None


def _converter():
    # One converter per process: building it parses OpenCC's dictionaries (~50 ms).
    global _OPENCC
    if _OPENCC is None:
        from opencc import OpenCC

        _OPENCC = OpenCC("t2s")
    return _OPENCC


def normalize(text: str, language: str) -> str | None:
    if language == "en":
        return normalize_en(text)
    if language == "zh":
        return normalize_zh(text)
    raise ValueError(f"no spoken-form normaliser for language {language!r}; choose en or zh")
