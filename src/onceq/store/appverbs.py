"""The store's verbs for an application's own code: waiting for a job, async calls, and
enqueueing inside the caller's transaction.

These are the defaults, right for SQLite: the async verbs run the sync ones on a thread
(sqlite3 has no async driver; a write holds the file for microseconds), a wait polls
the job's row with a backoff, and `using()` is refused — a transaction of the caller's
own is a PostgreSQL feature here (store/postgres_app.py: psycopg's async connections,
LISTEN/NOTIFY for waits, and the caller's connection for enqueues).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from onceq.errors import ConfigError
from onceq.models import FINISHED, Job, NewJob

WAIT_FIRST, WAIT_MOST = 0.002, 0.1  # polling a job's row: first pause, longest pause


class AppVerbs:
    """Mixed into Store: the dialect supplies job_get and job_insert."""

    def job_get(self, job_id: int) -> Job:
        raise NotImplementedError

    def job_insert(self, new: NewJob) -> Job:
        raise NotImplementedError

    def job_wait(self, job_id: int, timeout: float | None = None) -> Job:
        """The job once it is succeeded, failed or cancelled; TimeoutError after
        `timeout` seconds (JobNotFound at once for an id that does not exist)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = WAIT_FIRST
        while True:
            job = self.job_get(job_id)
            if job.status in FINISHED:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout}s")
            time.sleep(pause if deadline is None else min(pause, deadline - time.monotonic()))
            pause = min(pause * 1.5, WAIT_MOST)

    async def job_wait_async(self, job_id: int, timeout: float | None = None) -> Job:
        """job_wait for async code."""
        return await asyncio.to_thread(self.job_wait, job_id, timeout)

    async def job_insert_async(self, new: NewJob) -> Job:
        """job_insert for async code."""
        return await asyncio.to_thread(self.job_insert, new)

    def job_done_notify(self, job_ids: list[int]) -> None:
        """Wake the waiters of these jobs, which ended (where waiters are notified)."""

    async def close_async(self) -> None:
        """Close what the async verbs opened on the running event loop."""

    @contextmanager
    def using(self, connection: Any) -> Iterator[None]:
        """Run this store's enqueues on the caller's connection, in its transaction."""
        raise ConfigError(
            "enqueueing in your own transaction (app.using) needs a PostgreSQL store; "
            "this one is SQLite"
        )
        yield  # pragma: no cover - a generator, for contextmanager
