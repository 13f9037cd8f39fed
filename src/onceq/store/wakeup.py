"""How an idle worker learns that there may be work: notifications, or cheap polling.

Each dialect hands its workers one (`Store.waker`), so the worker knows no driver:

- PostgreSQL (store/postgres.py): LISTEN on the store's channel (every enqueue NOTIFYs it
  on commit), on a connection of its own that reconnects by itself; polling is only the
  fallback.
- SQLite: there is no notification across processes, but `PRAGMA data_version` changes
  whenever another connection commits, and reading it costs a few microseconds (it is
  the WAL index in shared memory, no I/O). An idle worker reads it every millisecond,
  backing off to 10 ms after a second of quiet, and looks for work only when it moved.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Protocol


class Waker(Protocol):
    """Waits until there may be work, the worker's own event is set, or a timeout."""

    def wait(self, event: threading.Event, timeout: float) -> None:
        """Return early when `event` is set or the store signals new work."""
        ...

    def ready(self, timeout: float) -> bool:
        """Wait (up to `timeout`) until new work would reach this waker at once
        (PostgreSQL: its LISTEN is in force); whether it would."""
        ...

    def close(self) -> None:
        """Stop any thread or connection of its own."""
        ...

    def take_awaited(self, job_ids: Iterable[int]) -> list[int]:
        """Of these jobs, which just ended, those someone announced waiting for (and
        forget them): the worker then notifies their waiters (PostgreSQL)."""
        ...


class PollingWaker:
    """Polls a cheap version number of the database (SQLite: PRAGMA data_version and
    this process's own commits) and returns when it moves."""

    FAST, SLOW, QUIET_AFTER = 0.001, 0.010, 1.0

    def __init__(self, version: Callable[[], Hashable]) -> None:
        self._version = version
        self._seen = version()
        self._active = time.monotonic()  # the last time anything happened

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

    def ready(self, timeout: float) -> bool:
        """Polling needs nothing set up."""
        return True

    def close(self) -> None:
        """Nothing to stop."""

    def take_awaited(self, job_ids: Iterable[int]) -> list[int]:
        """SQLite's waiters poll: nobody to tell."""
        return []
