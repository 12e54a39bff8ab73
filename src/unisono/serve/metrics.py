"""Prometheus metrics of one server (its own registry: two servers in a process do not mix)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from unisono.decode.stats import DecodeStats


class Metrics:
    def __init__(self, active_sessions: Callable[[], int]):
        self.registry = CollectorRegistry()
        self.requests = Counter("unisono_requests", "Requests answered", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("unisono_request_seconds", "Time from request to the last byte of the answer",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.tokens = Counter("unisono_generated_tokens", "Tokens the decoder produced", ["endpoint"], registry=self.registry)
        self.passes = Counter("unisono_decoder_passes", "Decoder passes that produced them", ["endpoint"], registry=self.registry)
        self.audio_seconds = Counter("unisono_audio_input_seconds", "Seconds of audio received", registry=self.registry)
        self.active = Gauge("unisono_active_sessions", "Decode sessions running or waiting", registry=self.registry)
        self.active.set_function(active_sessions)
        self.tokens_per_pass = Gauge("unisono_tokens_per_pass", "Tokens per decoder pass so far (MTP keeps several)",
                                     registry=self.registry)
        self.eager_turns = Counter("unisono_realtime_eager_turns", "Realtime answers started at a pause in the "
                                   "user's speech: confirmed by the end of the turn, or dropped when they went on",
                                   ["outcome"], registry=self.registry)
        self._tokens = self._passes = 0

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def decoded(self, endpoint: str, stats: DecodeStats) -> None:
        self.tokens.labels(endpoint).inc(stats.tokens)
        self.passes.labels(endpoint).inc(stats.passes)
        self._tokens += stats.tokens
        self._passes += stats.passes
        if self._passes:
            self.tokens_per_pass.set(self._tokens / self._passes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
