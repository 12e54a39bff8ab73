"""Blocking engine work from async handlers: run in a worker thread, its output streamed back
through an asyncio queue, stopped when the client goes away or the request times out."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Callable


class Gone(Exception):
    """Raised inside the worker when nobody waits for its output any more."""


class Stream:
    """`run(work)`: work(emit) runs in a thread; `async for item in stream` yields what it emits,
    then the stream ends with its return value in `result` (or its exception raised)."""

    _END = object()

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stopped = threading.Event()
        self.result: Any = None
        self._error: BaseException | None = None

    def emit(self, item: Any) -> None:
        """From the worker: hand an item to the event loop; raises Gone once the reader stopped."""
        if self._stopped.is_set():
            raise Gone()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def stop(self) -> None:
        self._stopped.set()

    def start(self, work: Callable[[Callable[[Any], None]], Any]) -> "Stream":
        def run() -> None:
            try:
                self.result = work(self.emit)
            except BaseException as e:  # handed to the reader, which raises it in the loop
                self._error = e
            finally:
                try:
                    self._loop.call_soon_threadsafe(self._queue.put_nowait, self._END)
                except RuntimeError:  # the loop is closed: the server is shutting down
                    pass

        threading.Thread(target=run, name="unisono-request", daemon=True).start()
        return self

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            while True:
                item = await self._queue.get()
                if item is self._END:
                    if self._error is not None:
                        raise self._error
                    return
                yield item
        finally:  # the reader left early (a client gone, a timeout): the worker stops at its next emit
            self.stop()

    async def wait(self) -> Any:
        """Drain the stream and return the work's result."""
        async for _ in self:
            pass
        return self.result
