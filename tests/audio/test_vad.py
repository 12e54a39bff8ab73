"""silero-vad utterance segmentation on real speech with inserted pauses."""

from __future__ import annotations

import numpy as np
import pytest

from unisono.audio.io import load_audio
from unisono.audio.vad import Span, merge_regions, speech_segments


@pytest.fixture(scope="module")
def long_audio(example_wav):
    """~50 s: the same 9.7 s sentence five times, with 1.5 s and 4 s pauses between."""
    a = load_audio(example_wav)
    gap = lambda s: np.zeros(int(16000 * s), np.float32)  # noqa: E731
    return np.concatenate([a, gap(1.5), a, gap(4.0), a, gap(1.5), a, gap(1.5), a])


def test_silence_has_no_speech():
    assert speech_segments(np.zeros(16000 * 3, np.float32)) == []


@pytest.mark.parametrize("limit", [30.0, 12.0])
def test_segments_are_bounded_ordered_and_cover_the_speech(long_audio, limit):
    spans = speech_segments(long_audio, max_segment_s=limit)
    assert spans, "speech was found"
    assert all(s.duration <= limit + 1e-6 for s in spans)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    total = len(long_audio) / 16000
    assert spans[0].start < 0.5 and spans[-1].end > total - 0.5
    # the 4 s pause (after the second sentence, ~21.2-25.2 s) is never inside a segment
    assert not any(s.start < 22.0 and s.end > 24.5 for s in spans)
    # nearly all 48 s of speech are covered (pauses inside sentences may be left out)
    assert sum(s.duration for s in spans) > 0.85 * 5 * 9.655


def test_merge_respects_limit_and_gap():
    regions = [Span(0, 5), Span(5.5, 9), Span(9.2, 14), Span(20, 22)]
    assert merge_regions(regions, max_segment_s=10, max_gap_s=2) == [Span(0, 9), Span(9.2, 14), Span(20, 22)]
    assert merge_regions(regions, max_segment_s=30, max_gap_s=10) == [Span(0, 22)]


def test_threads_sharing_the_model_get_what_one_thread_gets(example_wav):
    # a server finds speech for several clients at once; silero-vad keeps state inside its model
    from concurrent.futures import ThreadPoolExecutor

    from unisono.audio.vad import StreamingVAD, speech_regions

    audio = load_audio(example_wav)
    clips = [audio, audio[: len(audio) // 2], np.concatenate([np.zeros(16000, np.float32), audio])]
    alone = [speech_regions(c) for c in clips]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(speech_regions, clips * 8))
    assert together == alone * 8

    # a streaming VAD owns its model: fed in pieces, it finds the speech the whole clip shows
    stream = StreamingVAD(min_silence_ms=500)
    padded = np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(16000, np.float32)])
    changes = [c for i in range(0, len(padded), 1600) for c in stream.feed(padded[i : i + 1600])]
    assert [kind for kind, _ in changes] == ["start", "end"]
    first = alone[0][0].start * 16000 + 8000
    assert abs(changes[0][1] - first) < 0.25 * 16000  # streaming triggers a window or two apart


def test_a_pause_is_announced_before_the_silence_that_ends_the_turn(example_wav):
    # the Realtime server starts answering at a pause; the speaker going on takes it back
    import re

    from unisono.audio.vad import StreamingVAD

    audio = load_audio(example_wav)
    gap_at = 8000 + len(audio)
    x = np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(5600, np.float32), audio,
                        np.zeros(16000, np.float32)])
    stream = StreamingVAD(min_silence_ms=600, pause_ms=150)
    changes = [c for i in range(0, len(x), 1600) for c in stream.feed(x[i : i + 1600])]
    kinds = " ".join(kind for kind, _ in changes)
    assert re.fullmatch(r"start( pause resume)+ pause end", kinds), kinds
    # the gap between the two sentences is a pause the speaker went on after
    assert any(kind == "resume" and gap_at < sample < gap_at + 5600 + 8000 for kind, sample in changes)
    # the last pause is where the final silence began: the end is put there too, 600 ms later
    (_, last_pause), (_, end) = changes[-2:]
    assert abs(end - last_pause) < 1000 and last_pause > len(x) - 16000 - 8000
    # without pause_ms the stream says only start and end
    plain = StreamingVAD(min_silence_ms=600)
    assert [k for i in range(0, len(x), 1600) for k, _ in plain.feed(x[i : i + 1600])] == ["start", "end"]


def _blocks(x: np.ndarray, n: int = 2560):  # 160 ms
    return [x[i : i + n] for i in range(0, len(x), n)]


def test_a_live_stream_is_cut_into_its_utterances(example_wav):
    from unisono.audio.vad import StreamingVAD, TurnSegmenter

    audio = load_audio(example_wav)
    gap = lambda s: np.zeros(int(16000 * s), np.float32)  # noqa: E731
    x = np.concatenate([gap(0.5), audio, gap(1.5), audio[: 16000 * 4], gap(1.0)])
    segmenter = TurnSegmenter(min_silence_ms=700)
    turns = [t for b in _blocks(x) for t in segmenter.feed(b)]
    assert len(turns) == 2 and segmenter.flush() is None
    # each turn is the stream between the VAD's start and end, sample for sample
    vad = StreamingVAD(0.5, 700)
    changes = [c for b in _blocks(x) for c in vad.feed(b)]
    assert [k for k, _ in changes] == ["start", "end", "start", "end"]
    for turn, (start, end) in zip(turns, [(changes[0][1], changes[1][1]), (changes[2][1], changes[3][1])]):
        np.testing.assert_array_equal(turn, x[start:end])
    assert abs(len(turns[0]) / 16000 - len(audio) / 16000) < 0.8 and abs(len(turns[1]) / 16000 - 4.0) < 0.8
    # silence is not kept: only what the padding of a starting utterance can reach
    quiet = TurnSegmenter()
    for b in _blocks(gap(20.0)):
        assert quiet.feed(b) == []
    assert len(quiet._audio) <= 16000 + 2560


def test_a_turn_that_goes_on_is_cut_and_the_rest_kept(example_wav):
    from unisono.audio.vad import TurnSegmenter

    audio = load_audio(example_wav)
    x = np.concatenate([np.zeros(8000, np.float32), audio])  # the stream stops while speech goes on
    segmenter = TurnSegmenter(max_turn_s=3.0)
    turns = [t for b in _blocks(x) for t in segmenter.feed(b)]
    rest = segmenter.flush()
    assert len(turns) == 3 and all(len(t) == 3 * 16000 for t in turns) and rest is not None
    # the pieces are the utterance without a gap or a repeat
    joined = np.concatenate(turns + [rest])
    start = len(x) - len(joined)
    np.testing.assert_array_equal(joined, x[start:])
    assert start < 8000 + 0.3 * 16000


def test_a_reset_segmenter_starts_anew(example_wav):
    from unisono.audio.vad import TurnSegmenter

    audio = load_audio(example_wav)
    x = np.concatenate([np.zeros(8000, np.float32), audio[: 16000 * 3], np.zeros(16000, np.float32)])
    segmenter = TurnSegmenter(min_silence_ms=700)
    for b in _blocks(x[: 16000 * 2]):  # in the middle of an utterance
        segmenter.feed(b)
    segmenter.reset()
    fresh = TurnSegmenter(min_silence_ms=700)
    after = [t for b in _blocks(x) for t in segmenter.feed(b)]
    expected = [t for b in _blocks(x) for t in fresh.feed(b)]
    assert len(after) == len(expected) == 1 and np.array_equal(after[0], expected[0])
