"""Spoken-form normalisation: hand-checked readings, and no digit or symbol ever survives."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from num2words import num2words

from unisono.data.normalize import normalize, normalize_en, normalize_zh


@pytest.mark.parametrize("written, spoken", [
    ("It has 25 items.", "It has twenty-five items."),
    ("In 1999 it rained.", "In nineteen ninety-nine it rained."),
    ("It cost $4.50 today.", "It cost four dollars fifty cents today."),
    ("It cost $1 today.", "It cost one dollar today."),
    ("Up 12% today.", "Up twelve percent today."),
    ("The 3rd time.", "The third time."),
    ("Pi is 3.14 roughly.", "Pi is three point one four roughly."),
    ("Meet at 10:30 or 9:05 or 7:00.", "Meet at ten thirty or nine oh five or seven o'clock."),
    ("Born 2024-01-05 here.", "Born January fifth, twenty twenty-four here."),
    ("Agent 007 is here.", "Agent zero zero seven is here."),
    ("Mr. Smith & Dr. Who, e.g. here.", "Mister Smith and Doctor Who, for example here."),
    ("It was \u201cfine\u201d \u2014 really.", 'It was "fine" - really.'),
    ("It fell to -3 today.", "It fell to minus three today."),
])
def test_english_readings(written: str, spoken: str) -> None:
    assert normalize_en(written) == spoken


@pytest.mark.parametrize("written", ["See http://example.org now.", "Run foo_bar() now.", "Price: 5 \u00a5.", "12345"])
def test_english_unreadable_is_dropped(written: str) -> None:
    out = normalize_en(written)
    assert out is None or not re.search(r"\d", out)


@pytest.mark.parametrize("written, spoken", [
    ("增长了12%，共1500人", "增长了百分之十二，共一千五百人"),
    ("2023年10月5日", "二零二三年十月五日"),
    ("這是一個測試！", "这是一个测试！"),  # traditional -> simplified
    ("兰叶春葳蕤, 桂华秋皎洁。", "兰叶春葳蕤，桂华秋皎洁。"),
])
def test_mandarin_readings(written: str, spoken: str) -> None:
    assert normalize_zh(written) == spoken


@pytest.mark.parametrize("written", ["请使用Debian系统", "abc", "123abc"])
def test_mandarin_with_latin_is_dropped(written: str) -> None:
    assert normalize_zh(written) is None


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10**9))
def test_any_integer_reads_as_num2words(n: int) -> None:
    out = normalize_en(f"There were {n} of them.")
    assert out is not None and not re.search(r"\d", out)
    if not (1100 <= n <= 2099):  # four-digit years read in pairs
        assert num2words(n) in out


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10**8))
def test_mandarin_numbers_leave_no_digits(n: int) -> None:
    out = normalize_zh(f"一共有{n}个人。")
    assert out is not None and not re.search(r"\d", out) and out.endswith("个人。")


def test_unknown_language() -> None:
    with pytest.raises(ValueError, match="en or zh"):
        normalize("hola", "es")
