"""A worker's row in the worker registry (`onceq workers`), kept by its heartbeat.

`open()` registers the worker, `run_once(now)` is one beat (run on the heartbeat's
thread, after the leases are extended), `close()` removes the row on a clean exit. Each
beat says how long the row may outlive it (a few heartbeat periods, at least a minute),
and every so often removes the rows of workers that stopped beating. Nothing here can
fail the worker: the registry is for people to look at, and a beat that did not get
through is simply made again.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime

from onceq.models import WorkerRecord
from onceq.store import Store
from onceq.store.registry import WORKER_TTL
from onceq.version import __version__

log = logging.getLogger("onceq.worker")


class Presence:
    """One worker's registry row: registered, kept by beats, expired for others."""

    def __init__(
        self,
        store: Store,
        name: str,
        queues: Sequence[str] | None,
        concurrency: int,
        beat_every: float,
    ) -> None:
        self.store = store
        self.record = WorkerRecord(
            name=name,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=list(queues) if queues is not None else None,
            concurrency=concurrency,
            version=__version__,
            started_at=datetime.now(UTC),
            last_seen=datetime.now(UTC),
        )
        self.ttl = max(WORKER_TTL, 4 * beat_every)
        self.expire_every = self.ttl / 2  # how often this worker clears others' rows
        self.registered = False
        self._next_expiry = 0.0

    def open(self) -> None:
        """Register; if the store is away, the first beat that gets through does."""
        try:
            self.store.worker_register(self.record, ttl=self.ttl)
            self.registered = True
        except Exception as exc:
            log.warning("could not register worker %s yet (%s)", self.record.name, exc)

    def run_once(self, now: float) -> None:
        """One beat: last seen now (registered again if the row expired meanwhile),
        and, when due, the rows of workers that stopped beating removed."""
        if self.record.name not in self.store.worker_seen([self.record.name], ttl=self.ttl):
            self.store.worker_register(self.record, ttl=self.ttl)
        self.registered = True
        if now >= self._next_expiry:
            self._next_expiry = now + self.expire_every
            gone = self.store.worker_expire()
            if gone:
                log.info("worker registry: removed %d worker(s) that stopped beating: %s",
                         len(gone), ", ".join(gone))  # fmt: skip

    def close(self) -> None:
        """Remove the row (a clean exit)."""
        try:
            self.store.worker_unregister(self.record.name)
        except Exception as exc:
            log.warning("could not remove worker %s from the registry (%s); it expires "
                        "by itself", self.record.name, exc)  # fmt: skip
