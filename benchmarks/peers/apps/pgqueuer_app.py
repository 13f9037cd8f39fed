"""pgqueuer: the `pgq run apps.pgqueuer_app:create_pgqueuer` factory, asyncpg driver.

Payloads are ASCII: `<i>` for no-ops, `<i> <enqueue time>` for the latency jobs.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.models import Job

from apps import ledger


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(os.environ["PEERS_PG_DSN"])
    pgq = PgQueuer.from_asyncpg_connection(connection)

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        ledger.record(int(job.payload or b"-1"), job.id, time.time())

    @pgq.entrypoint("stamp")
    async def stamp(job: Job) -> None:
        started = time.time()
        i, t = (job.payload or b"-1 0").split()
        ledger.record(int(i), job.id, started, float(t))

    try:
        yield pgq
    finally:
        await connection.close()
