"""How an idle worker learns that there may be work: notifications, or cheap polling.

- PostgreSQL: LISTEN on the store's channel (every enqueue NOTIFYs it on commit), on a
  connection of its own that reconnects by itself; polling is only the fallback.
- SQLite: there is no notification across processes, but `PRAGMA data_version` changes
  whenever another connection commits, and reading it costs a few microseconds (it is
  the WAL index in shared memory, no I/O). An idle worker reads it every millisecond,
  backing off to 10 ms after a second of quiet, and looks for work only when it moved.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from onceq.store import Store

log = logging.getLogger("onceq.worker")


class Waker(Protocol):
    """Waits until there may be work, the worker's own event is set, or a timeout."""

    def wait(self, event: threading.Event, timeout: float) -> None:
        """Return early when `event` is set or the store signals new work."""
        ...

    def close(self) -> None:
        """Stop any thread or connection of its own."""
        ...


class SqliteWaker:
    """Polls PRAGMA data_version (and this store's own commits)."""

    FAST, SLOW, QUIET_AFTER = 0.001, 0.010, 1.0

    def __init__(self, store: Store) -> None:
        from onceq.store.sqlite import SqliteStore

        assert isinstance(store, SqliteStore)
        self.store = store
        self._seen = self._version()
        self._active = time.monotonic()  # the last time anything happened

    def _version(self) -> tuple[int, int]:
        return self.store.data_version(), self.store.commits

    def wait(self, event: threading.Event, timeout: float) -> None:
        end = time.monotonic() + timeout
        while True:
            quiet = time.monotonic() - self._active > self.QUIET_AFTER
            if event.wait(self.SLOW if quiet else self.FAST):
                self._active = time.monotonic()
                return
            version = self._version()
            if version != self._seen:
                self._seen = version
                self._active = time.monotonic()
                return
            if time.monotonic() >= end:
                return

    def close(self) -> None:
        """Nothing to stop."""


class PostgresWaker:
    """A LISTEN connection on a thread; a notification sets the worker's event."""

    def __init__(self, store: Store, wake: threading.Event) -> None:
        from onceq.store.postgres import PostgresStore

        assert isinstance(store, PostgresStore)
        self.store = store
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="onceq-listen", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        from psycopg import sql

        pause = 0.1
        while not self._stop.is_set():
            try:
                with self.store.connect(autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.store.channel)))
                    pause = 0.1
                    self.wake.set()  # anything enqueued while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self.wake.set()
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def wait(self, event: threading.Event, timeout: float) -> None:
        event.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
