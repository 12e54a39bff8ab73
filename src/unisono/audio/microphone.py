"""The machine's microphone and speakers, through sounddevice (PortAudio).

    with Microphone() as mic:   16 kHz mono float32 blocks of BLOCK_MS, as the device delivers
        for block in mic: ...    them; mic.discard_pending() drops what queued meanwhile
    play(audio)           16 kHz samples to the default output, waiting until they are heard

A machine without PortAudio or without an input device gets a `DeviceError` that says which,
never a trace from the audio library.
"""

from __future__ import annotations

import queue
from typing import Any, Iterator

import numpy as np

SAMPLE_RATE = 16000
BLOCK_MS = 160  # the Realtime API's chunk: a block is fed to the VAD as soon as it is read


class DeviceError(RuntimeError):
    pass


def _sounddevice() -> Any:
    try:
        import sounddevice
    except ImportError:
        raise DeviceError("live audio needs the sounddevice package: pip install sounddevice") from None
    except OSError:  # the package is there, the PortAudio library is not
        raise DeviceError("live audio needs the PortAudio library (Debian/Ubuntu: apt-get install libportaudio2; "
                          "macOS: brew install portaudio)") from None
    return sounddevice


def _check_device(sd: Any, kind: str, device: Any) -> None:
    try:
        sd.query_devices(device, kind=kind)
    except (ValueError, sd.PortAudioError) as e:
        what = "microphone" if kind == "input" else "audio output"
        raise DeviceError(f"no {what} found{f' ({device})' if device is not None else ''}: {e}") from None


class Microphone:
    """The default (or the named) microphone, opened for the `with` block; iterating gives its
    blocks as they arrive. `discard_pending` drops what was recorded meanwhile (a half-duplex
    loop does it after playing a reply, which the microphone would otherwise hear as the next turn)."""

    def __init__(self, block_ms: int = BLOCK_MS, device: Any = None):
        sd = _sounddevice()
        _check_device(sd, "input", device)
        self._blocks: queue.Queue[np.ndarray] = queue.Queue()

        def take(data: np.ndarray, frames: int, time: Any, status: Any) -> None:
            self._blocks.put(data[:, 0].copy())  # the callback runs on PortAudio's thread: hand the block over

        try:
            self._stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", device=device,
                                          blocksize=SAMPLE_RATE * block_ms // 1000, callback=take)
        except sd.PortAudioError as e:
            raise DeviceError(f"the microphone cannot record 16 kHz mono: {e}") from None

    def __enter__(self) -> "Microphone":
        self._stream.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stream.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self._blocks.get()

    def discard_pending(self) -> None:
        while not self._blocks.empty():
            self._blocks.get_nowait()


def play(audio: np.ndarray, device: Any = None) -> None:
    """16 kHz samples to the default (or the named) output; returns once they have been played."""
    sd = _sounddevice()
    _check_device(sd, "output", device)
    try:
        sd.play(np.asarray(audio, np.float32), SAMPLE_RATE, device=device, blocking=True)
    except sd.PortAudioError as e:
        raise DeviceError(f"the audio output failed: {e}") from None
