"""load_audio: formats, rates, channels, and a typed error for each kind of bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import soxr

from unisono.audio.io import (
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    InvalidAudioError,
    SilentAudioError,
    load_audio,
    prepare,
    save_audio,
)


@pytest.fixture(scope="module")
def speech(example_wav):
    audio, rate = sf.read(example_wav, dtype="float32")
    assert rate == 16000 and audio.ndim == 1
    return audio


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_24"), ("OGG", "VORBIS")])
def test_formats_round_trip(tmp_path, speech, fmt, subtype):
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, speech, 16000, format=fmt, subtype=subtype)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - len(speech)) <= 1
    tol = 0.2 if subtype == "VORBIS" else 1e-3  # lossy: compare energy, not samples
    if subtype == "VORBIS":
        assert abs(np.std(out[: len(speech)]) - np.std(speech)) / np.std(speech) < tol
    else:
        assert np.abs(out[: len(speech)] - speech).max() < tol


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_matches_soxr_and_keeps_duration(tmp_path, speech, rate):
    at_rate = soxr.resample(speech, 16000, rate)
    path = tmp_path / "clip.wav"
    sf.write(path, at_rate, rate, subtype="FLOAT")
    out = load_audio(path)
    np.testing.assert_allclose(out, soxr.resample(at_rate, rate, 16000, quality="VHQ"), atol=1e-6)
    assert abs(len(out) / 16000 - len(speech) / 16000) < 0.01


def test_multichannel_is_averaged(tmp_path, speech):
    stereo = np.stack([speech, 0.5 * speech, np.zeros_like(speech)], axis=1)
    path = tmp_path / "three.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), speech * 0.5, atol=1e-6)


def test_bytes_and_file_objects(example_wav, speech):
    data = example_wav.read_bytes()
    np.testing.assert_allclose(load_audio(data), speech, atol=0)
    np.testing.assert_allclose(load_audio(io.BytesIO(data)), speech, atol=0)


def test_save_round_trip(tmp_path, speech):
    save_audio(tmp_path / "x.flac", speech)
    assert np.abs(load_audio(tmp_path / "x.flac") - speech).max() < 1e-4


def test_save_makes_missing_folders_and_names_a_path_it_cannot_write(tmp_path, speech):
    save_audio(tmp_path / "a/b/x.wav", speech)
    assert len(load_audio(tmp_path / "a/b/x.wav")) == len(speech)
    (tmp_path / "taken.wav").mkdir()
    with pytest.raises(OSError, match="cannot write .*taken.wav"):
        save_audio(tmp_path / "taken.wav", speech)


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(EmptyAudioError):
        load_audio(b"")


def test_zero_length_wav(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(EmptyAudioError, match="no audio samples"):
        load_audio(tmp_path / "zero.wav")


def test_corrupt_file(tmp_path, example_wav):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(CorruptAudioError, match="not a readable audio file"):
        load_audio(tmp_path / "noise.wav")
    truncated_header = example_wav.read_bytes()[:20]
    with pytest.raises((CorruptAudioError, EmptyAudioError)):
        load_audio(truncated_header)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(IsADirectoryError):
        load_audio(tmp_path)


def test_nan_and_inf(tmp_path):
    bad = np.zeros(16000, np.float32)
    bad[100] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(InvalidAudioError, match="NaN"):
        load_audio(tmp_path / "nan.wav")
    bad[100] = np.inf
    with pytest.raises(InvalidAudioError):
        prepare(bad, 16000)


def test_silence_is_refused_only_when_asked(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    assert load_audio(tmp_path / "silence.wav").shape == (16000,)
    with pytest.raises(SilentAudioError, match="silent"):
        load_audio(tmp_path / "silence.wav", allow_silent=False)


def test_over_long_is_refused_from_the_header(tmp_path):
    sf.write(tmp_path / "long.wav", np.zeros(16000 * 5, np.int16), 16000)
    with pytest.raises(AudioTooLongError, match="longer than the limit"):
        load_audio(tmp_path / "long.wav", max_duration_s=4.0)
    assert len(load_audio(tmp_path / "long.wav", max_duration_s=5.0)) == 16000 * 5


def test_integer_arrays_are_scaled():
    out = prepare(np.array([0, 16383, -32767], np.int16), 16000)
    np.testing.assert_allclose(out, [0.0, 0.5, -1.0], atol=1e-4)


def test_a_pipe_is_read_not_taken_for_an_empty_file(tmp_path, example_wav, speech):
    # what `cat x.wav | unisono transcribe /dev/stdin` hands over: a path with no size
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(example_wav.read_bytes()), daemon=True)
    writer.start()
    try:
        out = load_audio(fifo)
    finally:
        writer.join(timeout=5)
        if writer.is_alive():  # the pipe was never read: drain it so that the writer ends
            fifo.read_bytes()
            writer.join(timeout=5)
    np.testing.assert_allclose(out, speech, atol=1e-4)


def test_only_paths_bytes_and_file_objects_are_audio_sources():
    for wrong in (0, 3, 2.5, None, ["a.wav"]):
        with pytest.raises(TypeError, match="path, bytes or a binary file object"):
            load_audio(wrong)  # an int once opened a file descriptor


def test_cancelling_channels_warn_and_keep_the_signal(tmp_path, speech):
    from unisono.audio.io import AudioWarning

    path = tmp_path / "phase.wav"
    sf.write(path, np.stack([speech, -speech], axis=1), 16000, subtype="FLOAT")  # right = left, inverted
    with pytest.warns(AudioWarning, match="cancel"):
        out = load_audio(path)
    np.testing.assert_allclose(np.abs(out), np.abs(speech), atol=1e-6)  # one channel, not their silent mean
    sf.write(path, np.stack([speech, 0.5 * speech], axis=1), 16000, subtype="FLOAT")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)  # channels that add up are mixed, silently
        np.testing.assert_allclose(load_audio(path), 0.75 * speech, atol=1e-6)
