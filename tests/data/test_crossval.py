import jiwer
import pytest

from unisono.data.crossval import (
    UNVERIFIED,
    Agreement,
    TierConfig,
    agreement,
    assign_tier,
    char_distance,
    rejection_reason,
    word_error_rate,
)


def test_word_error_rate_matches_jiwer_and_handles_empty():
    ref, hyp = "the cat sat on the mat", "the cat sat on mat today"
    assert word_error_rate(ref, hyp) == pytest.approx(jiwer.wer(ref, hyp))
    assert word_error_rate(ref, hyp) == pytest.approx(2 / 6)  # one deletion, one insertion
    assert word_error_rate("", "") == 0.0 and word_error_rate("", "x") == 1.0 and word_error_rate("a b", "") == 1.0


def test_char_distance_ignores_spaces():
    assert char_distance("g m e f", "gmef") == 0.0
    assert char_distance("abcd", "abxd") == pytest.approx(1 / 4)
    assert char_distance("今天天气好", "今天天汽好") == pytest.approx(1 / 5)
    assert char_distance("", "") == 0.0


def test_agreement_normalises_before_comparing():
    a = agreement("Hello, world! It's 25.", "hello world it is twenty five", "en", speech_s=2.0, systems=("a", "b"))
    assert a.wer == 0.0 and a.cer == 0.0
    assert a.speech_rate == pytest.approx(len("hello world it is 25".split()) / 2.0)
    assert a.rate_ok
    zh = agreement("今天天氣好。", "今天天气好", "zh", speech_s=1.0, systems=("a", "b"))  # traditional -> simplified
    assert zh.cer == 0.0 and zh.speech_rate == 5.0


def test_speech_rate_out_of_range_is_flagged():
    a = agreement(" ".join(["word"] * 40), " ".join(["word"] * 40), "en", speech_s=2.0, systems=("a", "b"))
    assert a.speech_rate == 20.0 and not a.rate_ok


def agree(wer, cer=None, rate_ok=True):
    return Agreement(wer=wer, cer=wer if cer is None else cer, speech_rate=2.5, rate_ok=rate_ok, systems=("a", "b"))


@pytest.mark.parametrize(
    "a, quality, speakers, tier",
    [
        (agree(0.0), 0.9, 1, "gold"),
        (agree(0.0), 0.9, 2, "silver"),  # two voices: not gold
        (agree(0.0), 0.4, 1, "silver"),  # noisy: not gold
        (agree(0.0, rate_ok=False), 0.9, 1, "bronze"),  # implausible rate: neither gold nor silver
        (agree(0.1), 0.9, 1, "silver"),
        (agree(0.3), 0.9, 1, "bronze"),
        (agree(0.3), 0.0, 1, "bronze"),
        (agree(0.5), 0.9, 1, None),
        (agree(0.1, cer=0.35), 0.9, 1, None),
        (None, 0.9, 1, UNVERIFIED),
    ],
)
def test_tiers(a, quality, speakers, tier):
    assert assign_tier(a, quality, speakers) == tier


def test_rejection_reason_gives_the_numbers():
    msg = rejection_reason(agree(0.5))
    assert "WER 0.50" in msg and "0.4" in msg and "bronze" in msg


def test_tier_config_is_configurable():
    from unisono.data.crossval import Tier

    strict = TierConfig(tiers=(Tier("only", max_wer=0.0, max_cer=0.0),))
    assert assign_tier(agree(0.0), 0.0, 3, strict) == "only"
    assert assign_tier(agree(0.01), 0.0, 1, strict) is None
