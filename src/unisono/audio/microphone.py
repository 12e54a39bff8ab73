"""The machine's microphone and speakers, through sounddevice (PortAudio).

    microphone_blocks()   16 kHz mono float32 blocks of BLOCK_MS, as the device delivers them
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


def microphone_blocks(block_ms: int = BLOCK_MS, device: Any = None) -> Iterator[np.ndarray]:
    """Blocks of the default (or the named) microphone until the caller stops reading."""
    sd = _sounddevice()
    _check_device(sd, "input", device)
    blocks: queue.Queue[np.ndarray] = queue.Queue()

    def take(data: np.ndarray, frames: int, time: Any, status: Any) -> None:
        blocks.put(data[:, 0].copy())  # the callback runs on PortAudio's thread: hand the block over

    try:
        stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", device=device,
                                blocksize=SAMPLE_RATE * block_ms // 1000, callback=take)
    except sd.PortAudioError as e:
        raise DeviceError(f"the microphone cannot record 16 kHz mono: {e}") from None
    with stream:
        while True:
            yield blocks.get()


def play(audio: np.ndarray, device: Any = None) -> None:
    """16 kHz samples to the default (or the named) output; returns once they have been played."""
    sd = _sounddevice()
    _check_device(sd, "output", device)
    try:
        sd.play(np.asarray(audio, np.float32), SAMPLE_RATE, device=device, blocking=True)
    except sd.PortAudioError as e:
        raise DeviceError(f"the audio output failed: {e}") from None
