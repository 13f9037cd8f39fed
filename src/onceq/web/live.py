"""Live updates: one watcher per dashboard process, server-sent events to each page.

The watcher waits on the store's own wake-up (`Store.waker`): on PostgreSQL a LISTEN on
the channel every enqueue NOTIFYs, on SQLite the file's data version, which moves with
every commit. Completions do not NOTIFY on PostgreSQL, so a quiet spell still ends in a
tick every `idle` seconds. Ticks are debounced: at most one per `debounce` seconds,
however busy the store. A page's script refetches itself on each tick and swaps in the
part that changed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from onceq.store import Store

KEEPALIVE = 15.0  # seconds between SSE comments, so proxies keep the stream open
STREAM_FOR = 300.0  # a stream ends after this; EventSource reconnects by itself


class ChangeFeed:
    """A version number that moves when the store may have changed."""

    def __init__(self, store: Store, *, debounce: float = 1.0, idle: float = 10.0) -> None:
        self.store = store
        self.debounce = debounce
        self.idle = idle
        self.version = 0
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by the store's waker (PostgreSQL: a NOTIFY)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="onceq-feed", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        waker = self.store.waker(self._wake)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                waker.wait(self._wake, self.idle)
                self._wake.clear()
                if self._stop.is_set():
                    return
                self.version += 1
                spent = time.monotonic() - started
                if spent < self.debounce:
                    self._stop.wait(self.debounce - spent)
        finally:
            waker.close()

    async def events(self, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[str]:
        """Server-sent events: `change` whenever the version moves, a comment now and
        then; ends when the client goes, the feed stops, or after STREAM_FOR seconds."""
        seen = self.version
        began = last = time.monotonic()
        yield "retry: 2000\n\n"
        while not self._stop.is_set() and time.monotonic() - began < STREAM_FOR:
            await asyncio.sleep(0.2)
            if await disconnected():
                return
            if self.version != seen:
                seen = self.version
                last = time.monotonic()
                yield f"event: change\ndata: {seen}\n\n"
            elif time.monotonic() - last > KEEPALIVE:
                last = time.monotonic()
                yield ": keepalive\n\n"
