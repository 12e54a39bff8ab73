"""The server under load: `unisono serve` on loopback, N clients at once for a fixed time.

Each client loops over a mix of requests until the round's time is up: a transcription (a real
AN4 clip, json), a streamed chat completion, and a realtime turn (the clip and a second of
silence as pcm16, the server's VAD ends the turn, the model answers). A share of requests is
dropped mid-answer on purpose (the client disconnects). Per round (one per client count):
p50/p95 latency per kind, requests per second, errors (429s from the per-key limit are counted
apart: they are intended), and the server's resident memory once the round has settled and at
its peak.
Realtime latency: end of the user's speech (the server's speech_stopped event) to the first
text of the answer (its transcript, when it is spoken) and to its first audio delta.

    python bench/serve_load.py                                # embedded model, 8 and 16 clients, 30 s each
    python bench/serve_load.py --clients 8,16,32 --seconds 60 --model DIR --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import httpx2 as httpx  # the HTTP client the openai package is built on
import openai
import soxr
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unisono.audio.io import load_audio  # noqa: E402

SHARED = Path(os.environ.get("UNISONO_SHARED") or Path(__file__).resolve().parents[2] / "shared")
DEFAULT_MANIFEST = SHARED / "data" / "real_speech" / "an4_test" / "manifest.jsonl"
KEY = "sk-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass
class Server:
    base: str  # http://127.0.0.1:PORT
    model: str  # the id /v1/models lists
    process: subprocess.Popen
    command: list[str]
    log: Path


@contextlib.contextmanager
def running_server(model_dir: Path | None, threads: int, max_concurrent: int = 24):
    """`unisono serve` on a free loopback port, up and answering."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("unisono")), "serve", "--port", str(port), "--api-key", KEY,
               "--threads", str(threads), "--max-concurrent", str(max_concurrent)]
    if model_dir:
        command += ["--model", str(model_dir)]
    log = tempfile.NamedTemporaryFile("w+", prefix="unisono-serve-", suffix=".log", delete=False)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    probe = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)
    try:
        for _ in range(240):
            try:
                model = probe.models.list().data[0].id
                break
            except openai.APIConnectionError:
                if server.poll() is not None:
                    sys.exit("the server did not start:\n" + Path(log.name).read_text()[-3000:])
                time.sleep(0.5)
        else:
            sys.exit("the server did not come up in 120 s")
        yield Server(base, model, server, command, Path(log.name))
    finally:
        server.terminate()
        server.wait(timeout=30)


class Tally:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {}
        self.realtime_first_text: list[float] = []
        self.realtime_first_audio: list[float] = []
        self.errors: dict[str, int] = {}
        self.limited = self.dropped = self.done = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def transcription(client: openai.AsyncOpenAI, clip: Path, model: str, tally: Tally, drop: bool) -> None:
    started = time.perf_counter()
    if drop:  # a client that gives up: the server must free what it started
        try:
            await asyncio.wait_for(client.audio.transcriptions.create(model=model, file=clip), timeout=0.05)
        except (asyncio.TimeoutError, openai.APIConnectionError):
            tally.dropped += 1
            return
    await client.audio.transcriptions.create(model=model, file=clip)
    tally.latency.setdefault("transcription", []).append(time.perf_counter() - started)


async def chat(client: openai.AsyncOpenAI, model: str, tally: Tally, drop: bool) -> None:
    started = time.perf_counter()
    stream = await client.chat.completions.create(model=model, max_tokens=48, stream=True, temperature=0,
                                                  messages=[{"role": "user", "content": "Tell me about the weather."}])
    async for _ in stream:
        if drop:
            await stream.close()
            tally.dropped += 1
            return
    tally.latency.setdefault("chat", []).append(time.perf_counter() - started)


async def realtime(url: str, pcm: bytes, tally: Tally, drop: bool) -> None:
    started = time.perf_counter()
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"max_output_tokens": 16, "audio": {"input": {
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}}}))
        for i in range(0, len(pcm), 9600):
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(pcm[i : i + 9600]).decode()}))
        stopped = text_seen = audio_seen = None
        async for raw in ws:
            event = json.loads(raw)
            kind = event["type"]
            if kind == "input_audio_buffer.speech_stopped":
                stopped, text_seen, audio_seen = time.perf_counter(), False, False
            elif kind in ("response.output_text.delta", "response.output_audio_transcript.delta") and text_seen is False:
                text_seen = True
                tally.realtime_first_text.append(time.perf_counter() - stopped)
                if drop:
                    tally.dropped += 1
                    return  # closes mid-answer
            elif kind == "response.output_audio.delta" and audio_seen is False:
                audio_seen = True
                tally.realtime_first_audio.append(time.perf_counter() - stopped)
            elif event["type"] == "response.done":
                break
            elif event["type"] == "error":
                raise RuntimeError(event["error"]["message"])
    tally.latency.setdefault("realtime", []).append(time.perf_counter() - started)


async def client_loop(base: str, model: str, clips: list[Path], pcm: list[bytes], until: float, tally: Tally,
                      seed: int, drop_rate: float) -> None:
    rng = random.Random(seed)
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=300)
    url = base.replace("http://", "ws://") + f"/v1/realtime?model={model}"
    while time.perf_counter() < until:
        kind = rng.choice(["transcription", "chat", "realtime"])
        drop = rng.random() < drop_rate
        try:
            if kind == "transcription":
                await transcription(client, rng.choice(clips), model, tally, drop)
            elif kind == "chat":
                await chat(client, model, tally, drop)
            else:
                await realtime(url, rng.choice(pcm), tally, drop)
            tally.done += 1
        except openai.RateLimitError:
            tally.limited += 1
            await asyncio.sleep(0.2)
        except websockets.exceptions.InvalidStatus as e:
            if e.response.status_code == 429:
                tally.limited += 1
            else:
                tally.error(f"{kind}: {e}")
        except Exception as e:  # noqa: BLE001 - every failure is counted and shown
            tally.error(f"{kind}: {type(e).__name__}: {str(e)[:80]}")
    await client.close()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint directory (default: the embedded model)")
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="JSONL with 'audio' paths")
    ap.add_argument("--clients", default="8,16", help="client counts, one round each")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of a round")
    ap.add_argument("--drop-rate", type=float, default=0.1, help="share of requests abandoned mid-answer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settle", type=float, default=6.0, help="seconds of quiet after a round before memory is read")
    ap.add_argument("--max-concurrent", type=int, default=24, help="the server's per-key limit (429s above it)")
    args = ap.parse_args()

    rows = [json.loads(line) for line in args.manifest.read_text().splitlines()[:8]]
    clips = [args.manifest.parent / r["audio"] for r in rows]
    silence = np.zeros(24000, np.float32)
    pcm = [(np.clip(np.concatenate([soxr.resample(load_audio(c), 16000, 24000), silence]), -1, 1) * 32767)
           .astype("<i2").tobytes() for c in clips]

    with running_server(args.model, args.threads, args.max_concurrent) as server:
        run_rounds(args, server, clips, pcm)


def run_rounds(args: argparse.Namespace, server: Server, clips: list[Path], pcm: list[bytes]) -> None:
    base, model = server.base, server.model
    print(f"server: {' '.join(server.command[1:])} (pid {server.process.pid}); "
          f"memory at start {memory_mb(server.process.pid)[0]:.0f} MB")
    print("| clients | kind | done | p50 s | p95 s | req/s | errors | 429 | dropped | RSS after MB | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in [int(c) for c in args.clients.split(",")]:
        tally = Tally()
        started = time.perf_counter()
        until = started + args.seconds

        async def round_() -> None:
            await asyncio.gather(*(client_loop(base, model, clips, pcm, until, tally, seed=i,
                                               drop_rate=args.drop_rate) for i in range(n)))

        asyncio.run(round_())
        elapsed = time.perf_counter() - started
        time.sleep(args.settle)  # abandoned work leaves the batch; the idle server returns freed memory
        if server.process.poll() is not None:
            sys.exit(f"the server died (exit {server.process.returncode}):\n" + server.log.read_text()[-3000:])
        rss, peak = memory_mb(server.process.pid)
        errors = sum(tally.errors.values())
        for kind, values in sorted(tally.latency.items()):
            print(f"| {n} | {kind} | {len(values)} | {percentile(values, 50):.2f} | {percentile(values, 95):.2f} | "
                  f"{len(values) / elapsed:.2f} | {errors} | {tally.limited} | {tally.dropped} | {rss:.0f} | {peak:.0f} |")
        for label, first in (("first text", tally.realtime_first_text), ("first audio", tally.realtime_first_audio)):
            if first:
                print(f"| {n} | realtime: speech end → {label} | {len(first)} | {percentile(first, 50):.2f} | "
                      f"{percentile(first, 95):.2f} | | | | | | |")
        for what, count in sorted(tally.errors.items()):
            print(f"    error ×{count}: {what}")
        active = httpx.get(base + "/health", timeout=30).json()["active_sessions"]
        print(f"    after the round: {active} decode sessions still active")


if __name__ == "__main__":
    main()
