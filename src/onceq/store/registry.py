"""The store's verbs for the worker registry: a row per live worker process.

A worker registers when it starts, beats with its heartbeat (`worker_seen`), and
removes its row when it exits cleanly. Each beat also sets when the row expires (from
the worker's own heartbeat period): a worker that died without exiting cleanly is
removed by the next `worker_expire` any other worker runs. A paused worker whose row
expired registers again at its next beat. The registry is for operators (`onceq
workers`, the dashboard): leases, not rows here, decide whose jobs are rescued.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from onceq.models import WorkerRecord
from onceq.store import rows
from onceq.store.tx import Tx

WORKER_TTL = 60.0  # seconds a row outlives its last beat, unless its worker says longer


class WorkerVerbs:
    """Mixed into Store: the dialect supplies _in_tx, _read and _time_param."""

    _in_tx: Callable[..., Any]
    _read: Callable[..., Any]
    _time_param: Callable[..., Any]

    def worker_register(self, record: WorkerRecord, *, ttl: float = WORKER_TTL) -> None:
        """Make (or make again) a worker's row; it expires `ttl` seconds after its last
        beat. The record's `last_seen` is ignored: the store's clock sets it."""
        params = {
            "name": record.name,
            "host": record.host,
            "pid": record.pid,
            "queues": None if record.queues is None else json.dumps(list(record.queues)),
            "concurrency": record.concurrency,
            "version": record.version,
            "started_at": self._time_param(record.started_at),
            "ttl": float(ttl),
        }
        self._in_tx(lambda tx: tx.run("worker_register", params), ("worker",))

    def worker_seen(self, names: Sequence[str], *, ttl: float = WORKER_TTL) -> set[str]:
        """A heartbeat of these workers; returns those that still have a row (one that
        has none expired meanwhile, and must register again)."""
        if not names:
            return set()
        params = {"names": json.dumps(list(names)), "ttl": float(ttl)}
        found: list[Any] = self._in_tx(lambda tx: tx.all("worker_seen", params), ("worker",))
        return {r["name"] for r in found}

    def worker_unregister(self, name: str) -> bool:
        """Remove a worker's row (on clean exit); False if it had none."""
        done: int = self._in_tx(lambda tx: tx.run("worker_unregister", {"name": name}),
                                ("worker",))  # fmt: skip
        return bool(done)

    def worker_expire(self) -> list[str]:
        """Remove the rows whose worker stopped beating; their names."""
        found: list[Any] = self._in_tx(lambda tx: tx.all("worker_expire", {}), ("worker",))
        return sorted(r["name"] for r in found)

    def worker_list(self) -> list[WorkerRecord]:
        """The registered workers, oldest first."""

        def read(tx: Tx) -> list[WorkerRecord]:
            return [rows.worker(r) for r in tx.all("worker_list", {})]

        found: list[WorkerRecord] = self._read(read)
        return found
