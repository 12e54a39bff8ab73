"""Audio in: any file soundfile reads, any rate and channel count -> 16 kHz mono float32.

Bad input raises a subclass of `AudioError` that says what is wrong, never a bare
soundfile/numpy exception:

    CorruptAudioError   the bytes are not audio soundfile can decode
    EmptyAudioError     zero samples (an empty file, a header with no frames)
    InvalidAudioError   NaN or inf samples, or an array of the wrong shape
    SilentAudioError    only digital silence (when the caller asks for speech)
    AudioTooLongError   longer than the caller's limit

A source that is neither a path, bytes nor a binary file object raises TypeError. Audio that
can be used but is likely not what the caller meant warns with `AudioWarning` (channels that
cancel when mixed to mono).
"""

from __future__ import annotations

import io
import re
import stat
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
# Peak below which a clip counts as digital silence (-90 dBFS: below 16-bit dither).
SILENCE_PEAK = 10 ** (-90 / 20)
# A mono mix this far (dB) below the loudest channel means the channels cancel (one is inverted).
CANCEL_DB = 20.0
# File name endings of audio the loader reads (a folder scan, a turn given by its path).
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff", ".aif", ".au", ".sph")

AudioSource = Union[str, Path, bytes, bytearray, BinaryIO]


class AudioError(ValueError):
    """Audio that cannot be used; the message says why."""


class CorruptAudioError(AudioError):
    pass


class EmptyAudioError(AudioError):
    pass


class InvalidAudioError(AudioError):
    pass


class SilentAudioError(AudioError):
    pass


class AudioTooLongError(AudioError):
    pass


class AudioWarning(UserWarning):
    """Audio that is used, but probably not as the caller meant (cancelling channels, a very quiet recording)."""


def _describe(source: AudioSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{type(source).__name__}>"


def load_audio(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
    *,
    max_duration_s: float | None = None,
    allow_silent: bool = True,
) -> np.ndarray:
    """Decode `source` (a path, bytes or a binary file object) to mono float32 at `sample_rate`.

    Channels are averaged; the rate is converted with soxr (VHQ). `max_duration_s` is checked
    on the header before the samples are decoded, so a huge file costs nothing to refuse.
    """
    if not isinstance(source, (str, Path, bytes, bytearray)) and not hasattr(source, "read"):
        # soundfile would take an int for a file descriptor and open it
        raise TypeError(f"an audio source is a path, bytes or a binary file object, not {type(source).__name__}")
    name = _describe(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"no such audio file: {path}")
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory, not an audio file")
        if not stat.S_ISREG(path.stat().st_mode):
            # a pipe or a device (/dev/stdin): no size, no seeking; read what it gives
            with open(path, "rb") as f:
                source = f.read()
            if not source:
                raise EmptyAudioError(f"{name}: nothing came through (0 bytes)")
            handle: object = io.BytesIO(source)
        elif path.stat().st_size == 0:
            raise EmptyAudioError(f"{name}: the file is empty (0 bytes)")
        else:
            handle = str(path)
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise EmptyAudioError(f"{name}: no bytes")
        handle = io.BytesIO(bytes(source))
    else:
        handle = source
    try:
        with sf.SoundFile(handle) as f:  # type: ignore[arg-type]
            rate, frames = f.samplerate, f.frames
            if max_duration_s is not None and frames > max_duration_s * rate:
                raise AudioTooLongError(
                    f"{name}: {frames / rate:.1f} s is longer than the limit of {max_duration_s:.1f} s"
                )
            data = f.read(dtype="float32", always_2d=True)  # (frames, channels)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        # libsndfile's own reason, without the Python object it names for an in-memory source
        reason = getattr(e, "error_string", None) or re.sub(r"Error opening <[^>]*>: ", "", str(e))
        raise CorruptAudioError(f"{name}: not a readable audio file ({reason})") from None
    if data.shape[0] == 0:
        raise EmptyAudioError(f"{name}: the file holds no audio samples")
    audio = mix_to_mono(data, name)
    return prepare(audio, rate, sample_rate, allow_silent=allow_silent, name=name)


def mix_to_mono(data: np.ndarray, name: str = "audio") -> np.ndarray:
    """(frames, channels) -> (frames,): the channels' mean, unless they cancel.

    A stereo file whose channels are opposite (one wired in reverse polarity) mixes to near
    silence, which would be transcribed as nothing. Then the loudest channel is kept instead,
    with an `AudioWarning`.
    """
    if data.shape[1] == 1:
        return data[:, 0]
    mix = data.mean(axis=1)
    channel_rms = np.sqrt(np.mean(np.square(data, dtype=np.float64), axis=0))  # (channels,)
    loudest = int(channel_rms.argmax())
    mix_rms = float(np.sqrt(np.mean(np.square(mix, dtype=np.float64))))
    if channel_rms[loudest] > SILENCE_PEAK and mix_rms < channel_rms[loudest] * 10 ** (-CANCEL_DB / 20):
        drop = 20 * np.log10(channel_rms[loudest] / max(mix_rms, 1e-12))
        warnings.warn(
            f"{name}: the {data.shape[1]} channels cancel when mixed to mono ({drop:.0f} dB quieter than channel "
            f"{loudest + 1}, one is likely inverted); using channel {loudest + 1} alone",
            AudioWarning,
            stacklevel=3,
        )
        return np.ascontiguousarray(data[:, loudest])
    return mix


def prepare(
    audio: np.ndarray,
    rate: int,
    sample_rate: int = SAMPLE_RATE,
    *,
    allow_silent: bool = True,
    name: str = "audio",
) -> np.ndarray:
    """Check and resample an in-memory signal: (samples,) or (samples, channels) at `rate`."""
    audio = np.asarray(audio)
    if np.issubdtype(audio.dtype, np.integer):  # PCM: full scale is the type's largest value
        audio = audio.astype(np.float32) / np.iinfo(audio.dtype).max
    if audio.ndim == 2:
        if audio.shape[0] == 0:
            raise EmptyAudioError(f"{name}: no samples")
        audio = mix_to_mono(audio, name)
    if audio.ndim != 1:
        raise InvalidAudioError(f"{name}: expected (samples,) or (samples, channels), got shape {audio.shape}")
    if audio.size == 0:
        raise EmptyAudioError(f"{name}: no samples")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise InvalidAudioError(f"{name}: holds NaN or infinite samples")
    if rate <= 0:
        raise InvalidAudioError(f"{name}: invalid sample rate {rate}")
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate, quality="VHQ").astype(np.float32, copy=False)
        if audio.size == 0:
            raise EmptyAudioError(f"{name}: too short to resample ({rate} Hz -> {sample_rate} Hz leaves no samples)")
    if not allow_silent and float(np.abs(audio).max()) < SILENCE_PEAK:
        raise SilentAudioError(f"{name}: the audio is silent (peak below -90 dBFS)")
    return np.ascontiguousarray(audio)


def save_audio(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float audio; the format follows the suffix (.wav 16-bit PCM, .flac, .ogg). Missing folders are made.
    A path that cannot be written raises OSError naming it."""
    path = Path(path)
    if path.is_dir():
        raise OSError(f"cannot write {path}: it is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "PCM_16" if path.suffix.lower() in (".wav", ".flac") else None
    try:
        sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype=subtype)
    except sf.LibsndfileError as e:  # no permission, a full disk
        raise OSError(f"cannot write {path}: {e.error_string}") from None


__all__ = [
    "AUDIO_EXTENSIONS",
    "SAMPLE_RATE",
    "AudioError",
    "AudioTooLongError",
    "AudioWarning",
    "CorruptAudioError",
    "EmptyAudioError",
    "InvalidAudioError",
    "SilentAudioError",
    "load_audio",
    "mix_to_mono",
    "prepare",
    "save_audio",
]


AUDIO_FORMATS = ("wav", "flac", "ogg", "pcm")  # pcm: raw 16-bit little-endian mono, no header


def encode_audio(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, fmt: str = "wav") -> bytes:
    """Float audio as the bytes of a file in `fmt` (what a server sends, what stdout takes)."""
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"audio format must be one of {', '.join(AUDIO_FORMATS)}, got {fmt!r}")
    clipped = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)
    if fmt == "pcm":
        return np.rint(clipped * 32767).astype("<i2").tobytes()  # rounded as libsndfile rounds
    buffer = io.BytesIO()
    sf.write(buffer, clipped, sample_rate, format=fmt.upper(), subtype="PCM_16" if fmt in ("wav", "flac") else "VORBIS")
    return buffer.getvalue()
