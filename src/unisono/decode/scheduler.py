"""Continuous batching: many decode sessions advanced by one decoder pass per step.

After vLLM's scheduler, at the scale of one process: requests wait in a queue; between steps the
scheduler admits waiting ones (their prompts are prefilled together in one decoder pass, then
their KV cache rows join the batch) and retires finished or cancelled ones, so a short request never waits for a long one and
a new one never waits for the batch to drain.

    submit() ─► waiting ─► admit: prompts prefilled in one pass, cache joins the batch ─► running ─► finished: retired
                              (bounded by max_batch and the step's token budget)

The batch cache is one transformers DynamicCache whose rows are the running sessions:

    slot:      0   1   2   3   4   5   6   7
    row 0:     .   .   a   a   a   x   a   a      a: attended, .: left padding, x: a rejected draft
    row 1:     b   b   b   b   b   b   b   b

Rows are left-padded when a longer one joins; each row keeps its own rotary positions (the
session's context length), and an attention mask over the slots hides padding, rejected drafts
and the filler of rows that fed fewer tokens this step (a sampled row feeds 1 token where an MTP
row feeds 1 + K). When masked slots pass `compact_ratio` of the cache, every row's attended
slots are packed to the right. Per-row logic (drafts, verification, sampling, stops, output) is
the Session's own `plan`/`commit`, so a session decodes the same tokens alone or batched.

Failures stay with their request: bad input is refused by `submit`; an exception in a
request's prefill, drafting or token callback ends that request (`Request.error`) and the
others go on. Only a failure of the shared decoder pass ends the requests in it.

Thread use: `start()` runs the steps on a background thread; `submit` and `Request.cancel` may
be called from any thread; `Request.tokens()` blocks for tokens, `Request.stream()` is an async
iterator for asyncio servers. Without `start()`, call `step()` / `run_until_idle()` yourself.
A decoder whose cache layers are not plain full-attention layers (sliding windows) cannot share
a batch cache: its sessions are stepped one at a time, still interleaved with the others.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator

import torch
import torch.nn.functional as F

from unisono.decode.session import ERROR, Session, SessionConfig

_DONE = object()  # the end of a request's token stream


@dataclass
class SchedulerConfig:
    max_batch: int = 16  # sessions decoding at once
    max_batch_tokens: int = 4096  # tokens fed per step: prompts admitted + 1 + K per running session
    compact_ratio: float = 0.5  # pack the batch cache when this fraction of its slots is masked

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")
        if not 0 < self.compact_ratio <= 1:
            raise ValueError(f"compact_ratio must be in (0, 1], got {self.compact_ratio}")


class Request:
    """One submitted sequence: its session, and its tokens as they come."""

    def __init__(self, request_id: int, session: Session, embeds: torch.Tensor, wake: Callable[[], None]):
        self.id, self.session, self.embeds = request_id, session, embeds
        self.error: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._done = threading.Event()
        self._wake = wake

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def output(self) -> list[int]:
        return self.session.output

    @property
    def finish_reason(self) -> str | None:
        return self.session.finish_reason if self.done else None

    def cancel(self) -> None:
        self.session.cancel()
        self._wake()

    def result(self, timeout: float | None = None) -> list[int]:
        """Wait for the end; the tokens emitted."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} not finished after {timeout} s")
        return self.session.output

    def tokens(self, timeout: float | None = None) -> Iterator[int]:
        """Tokens as they are emitted (blocking), until the request ends."""
        while True:
            item = self._queue.get(timeout=timeout)
            if item is _DONE:
                return
            yield item

    async def stream(self) -> AsyncIterator[int]:
        """Tokens as they are emitted, for asyncio (the wait runs in a worker thread)."""
        while True:
            item = await asyncio.to_thread(self._queue.get)
            if item is _DONE:
                return
            yield item

    def _emit(self, token: int) -> None:
        self._queue.put(token)

    def _finish(self, error: str | None = None) -> None:
        if self._done.is_set():
            return
        if error is not None:
            self.error = error
            self.session._finish = ERROR
            self.session.error = error
        self.embeds = None
        self._queue.put(_DONE)
        self._done.set()


class _BatchCache:
    """The running sessions' KV caches stacked into one DynamicCache, rows left-padded, with a mask."""

    def __init__(self) -> None:
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # (B, S) long: 1 where a row may attend a slot

    @staticmethod
    def can_hold(session_cache: Any) -> bool:
        layers = getattr(session_cache, "layers", None)
        return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)

    def add(self, session_cache: Any, session_mask: torch.Tensor) -> None:
        """A prefilled cache (one session's row, or several prefilled together) joins as the last rows."""
        if self.cache is None:
            self.cache, self.mask = session_cache, session_mask.clone()
            return
        S, s = self.mask.shape[1], session_mask.shape[1]
        pad_old, pad_new = max(0, s - S), max(0, S - s)
        for layer, new in zip(self.cache.layers, session_cache.layers):
            # (B, H, S, hd): left padding sits before the time axis' first slot
            layer.keys = torch.cat([F.pad(layer.keys, (0, 0, pad_old, 0)), F.pad(new.keys, (0, 0, pad_new, 0))])
            layer.values = torch.cat([F.pad(layer.values, (0, 0, pad_old, 0)), F.pad(new.values, (0, 0, pad_new, 0))])
        self.mask = torch.cat([F.pad(self.mask, (pad_old, 0)), F.pad(session_mask, (pad_new, 0))])

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (retire the others), and drop the slots no kept row attends at the left."""
        if not rows:
            self.cache = self.mask = None
            return
        index = torch.tensor(rows, device=self.mask.device)
        self.mask = self.mask[index]
        attended = self.mask.any(0).nonzero()
        first = int(attended[0]) if len(attended) else self.mask.shape[1]
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index][:, :, first:]
            layer.values = layer.values[index][:, :, first:]

    def masked_fraction(self) -> float:
        return 0.0 if self.mask is None or self.mask.numel() == 0 else 1.0 - float(self.mask.float().mean())

    def compact(self) -> None:
        """Pack each row's attended slots to the right, in order; drop the slots no row needs."""
        # a stable sort on the mask puts a row's masked slots first and keeps attended ones in time order
        order = torch.sort(self.mask, dim=1, stable=True).indices  # (B, S)
        width = int(self.mask.sum(1).max())
        order = order[:, order.shape[1] - width :]  # (B, width)
        self.mask = self.mask.gather(1, order)
        for layer in self.cache.layers:
            index = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys, layer.values = layer.keys.gather(2, index), layer.values.gather(2, index)


class Scheduler:
    def __init__(self, model: Any, config: SchedulerConfig | None = None):
        self.model, self.config = model, config or SchedulerConfig()
        self._lock = threading.Condition()
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []  # rows of the batch cache, in order
        self._solo: list[Request] = []  # sessions whose cache cannot join the batch: stepped alone
        self._batch = _BatchCache()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        # sessions' caches can share the batch cache (plain full-attention layers, no sliding windows)
        self._batchable = _BatchCache.can_hold(model.new_kv_cache())
        self.steps = 0  # decoder passes over the batch

    # ---- the client side -----------------------------------------------------------------------
    def submit(self, embeds: torch.Tensor, config: SessionConfig, on_token: Callable[[int], None] | None = None) -> Request:
        """Queue a prompt, (T, D) input embeddings, for decoding with its own settings. Bad input
        raises ValueError here; later failures end only this request (see Request.error)."""
        holder: list[Request] = []

        def emit(token: int) -> None:
            holder[0]._emit(token)
            if on_token is not None:
                on_token(token)

        session = Session(self.model, config, on_token=emit)
        request = Request(next(self._ids), session, session.check_embeds(embeds), self._wake)
        holder.append(request)
        with self._lock:
            if self._stopping:
                raise RuntimeError("the scheduler is closed")
            self._waiting.append(request)
            self._lock.notify()
        return request

    @property
    def running(self) -> int:
        return len(self._running) + len(self._solo)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def start(self) -> "Scheduler":
        """Step on a background thread until close()."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="unisono-scheduler", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the background thread; requests still queued or running are cancelled."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for r in list(self._waiting) + self._running + self._solo:
            r.session.cancel()
            r._finish()
        self._waiting.clear()
        self._running, self._solo = [], []
        self._batch = _BatchCache()

    def __enter__(self) -> "Scheduler":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run_until_idle(self) -> None:
        while self.step():
            pass

    # ---- the engine side ----------------------------------------------------------------------
    def _wake(self) -> None:
        with self._lock:
            self._lock.notify()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._waiting and not self._running and not self._solo:
                    self._lock.wait()
                if self._stopping:
                    return
            self.step()

    @torch.no_grad()
    def step(self) -> int:
        """Admit, run one decoder pass for every running session, retire. Returns the sessions
        still running or waiting."""
        self._retire()
        self._admit()
        if self._running:
            self._decode()
        for r in self._solo:
            self._guard(r, r.session.step)
        self._retire()
        if self._batch.masked_fraction() > self.config.compact_ratio:
            self._batch.compact()
        return self.running + self.waiting

    def _admit(self) -> None:
        """Waiting requests in order, while the batch has room and the step's token budget allows
        (a prompt longer than the whole budget is admitted alone). Their prompts are prefilled
        together in one decoder pass when the model's caches can share the batch."""
        budget = self.config.max_batch_tokens - sum(1 + r.session.K for r in self._running)
        admitted: list[Request] = []
        while True:
            with self._lock:
                if not self._waiting or self.running + len(admitted) >= self.config.max_batch:
                    break
                cost = self._waiting[0].embeds.shape[1] + 1 + self._waiting[0].session.K
                if cost > budget and (admitted or self.running):
                    break
                request = self._waiting.popleft()
            budget -= cost
            if request.session.finished:  # cancelled while waiting
                request._finish()
                continue
            admitted.append(request)
        if len(admitted) > 1 and self._batchable:
            self._prefill_together(admitted)
            return
        for request in admitted:
            session = request.session
            if not self._guard(request, lambda: session.prefill(request.embeds)):
                continue
            request.embeds = None
            if session.finished:
                request._finish()
            elif self._batchable:
                self._batch.add(session._cache, session._kv_mask)
                session._cache = session._kv_mask = None
                session.scheduled = True
                self._running.append(request)
            else:
                self._solo.append(request)

    def _prefill_together(self, requests: list[Request]) -> None:
        """One decoder pass over several prompts, left-padded; their cache rows join the batch."""
        device = self.model.device
        lengths = [r.embeds.shape[1] for r in requests]
        L, B = max(lengths), len(requests)
        embeds = torch.stack([F.pad(r.embeds[0], (0, 0, L - n, 0)) for r, n in zip(requests, lengths)])  # (B, L, D)
        pad = torch.tensor([L - n for n in lengths], device=device)[:, None]
        slots = torch.arange(L, device=device)[None, :]
        mask = (slots >= pad).long()  # (B, L)
        positions = (slots - pad).clamp(min=0)  # each prompt's own positions from 0
        cache = self.model.new_kv_cache()
        try:
            hidden = self.model.decoder_forward(embeds, mask, positions, cache)  # (B, L, D)
        except Exception as e:  # the shared pass failed: its requests end, the scheduler goes on
            for r in requests:
                r._finish(f"prefill pass failed: {e}")
            return
        self.steps += 1
        keep = []
        for i, (r, n) in enumerate(zip(requests, lengths)):
            ok = self._guard(r, lambda: r.session.take_input(embeds[i : i + 1, L - n :], hidden[i : i + 1, L - n :]))
            r.embeds = None
            if ok and not r.session.finished:
                keep.append(i)
            elif ok:
                r._finish()
        if not keep:
            return
        if len(keep) < B:
            index = torch.tensor(keep, device=device)
            mask = mask[index]
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        self._batch.add(cache, mask)
        for i in keep:
            requests[i].session.scheduled = True
            requests[i].session._started = True
            self._running.append(requests[i])

    def _decode(self) -> None:
        """One decoder pass over every running session."""
        device = self.model.device
        plans: list[torch.Tensor | None] = []
        for r in self._running:
            plan = [None]
            if not r.session.finished:  # cancelled since the last retirement: fed filler, retired after
                self._guard(r, lambda: plan.__setitem__(0, r.session.plan()))
            plans.append(plan[0])
        T = max(len(p) for p in plans if p is not None) if any(p is not None for p in plans) else 1
        B = len(plans)
        feed = torch.zeros(B, T, dtype=torch.long, device=device)
        real = torch.zeros(B, T, dtype=torch.long, device=device)  # 0: filler of a row that feeds fewer tokens
        start = torch.tensor([r.session.context_length for r in self._running], device=device)
        positions = start[:, None] + torch.arange(T, device=device)[None, :]  # (B, T)
        for i, p in enumerate(plans):
            if p is not None:
                feed[i, : len(p)], real[i, : len(p)] = p, 1
        embeds = self.model.embed_tokens(feed)  # (B, T, D)
        self._batch.mask = torch.cat([self._batch.mask, real], dim=1)
        try:
            hidden = self.model.decoder_forward(embeds, self._batch.mask, positions, self._batch.cache)  # (B, T, D)
            logits = self.model.logits(hidden)  # (B, T, V)
        except Exception as e:  # the shared pass failed: its requests end, the scheduler goes on
            for r in self._running:
                r.session.scheduled = False
                r._finish(f"decoder pass failed: {e}")
            self._running, self._batch = [], _BatchCache()
            return
        self.steps += 1
        for i, (r, p) in enumerate(zip(self._running, plans)):
            if p is None or r.done or r.session.finished:
                continue
            t, kept = len(p), [0]

            def commit(i=i, t=t, p=p, r=r, kept=kept) -> None:
                kept[0] = r.session.commit(p, logits[i, :t], positions[i, :t], embeds[i, :t], hidden[i, :t])[1]

            self._guard(r, commit)
            self._batch.mask[i, -T:] = (torch.arange(T, device=device) < kept[0]).long()

    def _guard(self, request: Request, work: Callable[[], Any]) -> bool:
        """Run one request's own work; an exception ends that request only."""
        try:
            work()
            return True
        except Exception as e:
            request._finish(f"{type(e).__name__}: {e}")
            return False

    def _retire(self) -> None:
        keep = []
        for i, r in enumerate(self._running):
            if r.done or r.session.finished:
                r._finish()
            else:
                keep.append(i)
        if len(keep) < len(self._running):
            self._batch.keep(keep)
            self._running = [self._running[i] for i in keep]
        for r in self._solo:
            if r.session.finished:
                r._finish()
        self._solo = [r for r in self._solo if not r.done]
