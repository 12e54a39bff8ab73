"""One spoken conversation over /v1/realtime, timed as a user hears it.

`unisono serve` on loopback; one client streams real speech (AN4 clips) as pcm16 in 160 ms chunks
at real-time pace, followed by silence, and lets the server's VAD end each turn. Per turn, from the
moment the last sample of speech was sent (the clip's speech end, found by trimming its trailing
silence): the server's speech_stopped, the input transcript, the first text of the answer and its
first audio delta. Then barge-in: while an answer is being spoken the client starts the next clip,
and the bench times speech onset → speech_started (where a client stops playback) → the answer's
response.done (cancelled, when it was still being generated).

    python bench/realtime_latency.py                       # embedded model, 20 turns, 10 barge-ins
    python bench/realtime_latency.py --model DIR --turns 40 --silence-ms 300 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from pathlib import Path

import numpy as np
import soxr
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from serve_load import DEFAULT_MANIFEST, KEY, percentile, running_server  # noqa: E402

from unisono.audio.io import load_audio  # noqa: E402
from unisono.audio.level import speech_span  # noqa: E402

CHUNK_S = 0.16
RATE = 24000


def pcm16(audio16k: np.ndarray) -> bytes:
    return (np.clip(soxr.resample(audio16k, 16000, RATE), -1, 1) * 32767).astype("<i2").tobytes()


def speech_bounds(audio: np.ndarray) -> tuple[float, float]:
    """(onset, end) of the speech in a 16 kHz clip, in seconds (frames within 40 dB of the loudest)."""
    start, end = speech_span(audio, threshold_db=-40.0)
    return start / 16000, (end or len(audio)) / 16000


class Events:
    """Every server event with its arrival time, read in the background."""

    def __init__(self, ws) -> None:
        self.ws, self.log, self.new = ws, [], asyncio.Event()

    async def read(self) -> None:
        async for raw in self.ws:
            event = json.loads(raw)
            self.log.append((time.perf_counter(), event))
            self.new.set()
            if event["type"] == "error":
                print(f"    server error: {event['error'].get('message')}")

    async def wait(self, kind: str, after: int, timeout: float = 120.0, **match) -> tuple[float, dict, int]:
        """The first `kind` event at index >= after (with the given fields)."""
        deadline = time.perf_counter() + timeout
        while True:
            for i in range(after, len(self.log)):
                at, event = self.log[i]
                if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                    return at, event, i
            self.new.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"no {kind} within {timeout:.0f} s")
            try:
                await asyncio.wait_for(self.new.wait(), left)
            except asyncio.TimeoutError:
                pass

    def first_after(self, kinds: tuple[str, ...], start: int, stop_kind: str = "response.done") -> float | None:
        for at, event in self.log[start:]:
            if event["type"] in kinds:
                return at
            if event["type"] == stop_kind:
                return None
        return None


async def stream(ws, pcm: bytes, started: float) -> None:
    """Send `pcm` in 160 ms chunks, chunk k at started + k·160 ms."""
    step = int(RATE * CHUNK_S) * 2
    for k, i in enumerate(range(0, len(pcm), step)):
        delay = started + k * CHUNK_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(pcm[i : i + step]).decode()}))


async def conversation(url: str, clips: list[np.ndarray], turns: int, barge_ins: int, silence_ms: int,
                       max_tokens: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    silence = np.zeros(int(16000 * (silence_ms / 1000 + 0.6)), np.float32)
    timings: dict[str, list[float]] = {}
    barge: dict[str, list[float]] = {}
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}, max_size=2**24) as ws:
        events = Events(ws)
        reader = asyncio.create_task(events.read())
        await ws.send(json.dumps({"type": "session.update", "session": {
            "output_modalities": ["audio"], "max_output_tokens": max_tokens,
            "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}}}}))
        await events.wait("session.updated", 0)
        for turn in range(turns + barge_ins):
            clip = clips[turn % len(clips)]
            onset, end = speech_bounds(clip)
            mark = len(events.log)
            started = time.perf_counter() + 0.05
            sending = asyncio.create_task(stream(ws, pcm16(np.concatenate([clip, silence])), started))
            if turn < turns:  # a plain turn: wait for the whole answer
                speech_end = started + end
                at_stop, _, _ = await events.wait("input_audio_buffer.speech_stopped", mark)
                _, done, i_done = await events.wait("response.done", mark)
                await sending
                row = {"speech_stopped": at_stop,
                       "transcript": events.first_after(("conversation.item.input_audio_transcription.completed",),
                                                        mark),
                       "first_text": events.first_after(("response.output_audio_transcript.delta",
                                                         "response.output_text.delta"), mark),
                       "first_audio": events.first_after(("response.output_audio.delta",), mark),
                       "done": events.log[i_done][0]}
                for name, at in row.items():
                    if at is not None:
                        timings.setdefault(name, []).append(at - speech_end)
            else:  # barge-in: the next clip starts as soon as the answer's first audio arrives
                await sending
                _, _, i_audio = await events.wait("response.output_audio.delta", mark)
                mark = len(events.log)
                started = time.perf_counter() + 0.02
                onset_at = started + onset
                sending = asyncio.create_task(stream(ws, pcm16(np.concatenate([clip, silence])), started))
                at_start, _, _ = await events.wait("input_audio_buffer.speech_started", mark)
                barge.setdefault("speech_started", []).append(at_start - onset_at)
                at_done, done, _ = await events.wait("response.done", i_audio)
                if done["response"]["status"] == "cancelled":
                    barge.setdefault("answer_cancelled", []).append(at_done - onset_at)
                else:
                    barge.setdefault("answer_finished_first", []).append(at_done - onset_at)
                await events.wait("response.done", mark)  # the barge-in turn's own answer
                await sending
        reader.cancel()
    return timings, barge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint directory (default: the embedded model)")
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="JSONL with 'audio' paths")
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--barge-ins", type=int, default=10)
    ap.add_argument("--silence-ms", type=int, default=500, help="the server VAD's end-of-turn silence")
    ap.add_argument("--max-output-tokens", type=int, default=32, help="of each text answer")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    rows = [json.loads(line) for line in args.manifest.read_text().splitlines()[: args.turns + args.barge_ins]]
    clips = [load_audio(args.manifest.parent / r["audio"]) for r in rows]
    with running_server(args.model, args.threads) as server:
        url = server.base.replace("http://", "ws://") + f"/v1/realtime?model={server.model}"
        timings, barge = asyncio.run(conversation(url, clips, args.turns, args.barge_ins, args.silence_ms,
                                                  args.max_output_tokens))
    print(f"\n{args.turns} turns, VAD silence {args.silence_ms} ms, answers of at most {args.max_output_tokens} "
          f"tokens, {args.threads} threads; seconds after the end of the user's speech:")
    print("| event | n | median s | p95 s |\n|---|---|---|---|")
    for name, values in timings.items():
        print(f"| {name} | {len(values)} | {percentile(values, 50):.3f} | {percentile(values, 95):.3f} |")
    print(f"\n{args.barge_ins} barge-ins; seconds after the onset of the interrupting speech:")
    print("| event | n | median s | p95 s |\n|---|---|---|---|")
    for name, values in barge.items():
        print(f"| {name} | {len(values)} | {percentile(values, 50):.3f} | {percentile(values, 95):.3f} |")


if __name__ == "__main__":
    main()
