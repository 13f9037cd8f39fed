"""procrastinate: async tasks (its worker runs sync ones through a thread pool)."""

from __future__ import annotations

import os
import time
from typing import Any

import procrastinate

from apps import ledger

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("PEERS_PG_DSN", ""))
)


@app.task(name="noop", pass_context=True)
async def noop(context: Any, i: int) -> None:
    ledger.record(i, context.job.id, time.time())


@app.task(name="stamp", pass_context=True)
async def stamp(context: Any, i: int, t: float) -> None:
    started = time.time()
    ledger.record(i, context.job.id, started, t)
