"""Celery with the Redis broker; no result backend (the handlers return nothing)."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from apps import ledger

app = Celery("peers", broker=os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/5"))
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=int(os.environ.get("PEERS_CELERY_PREFETCH", "4")),
)


@app.task(bind=True, name="peers.noop")
def noop(self: Any, i: int) -> None:
    ledger.record(i, self.request.id, time.time())


@app.task(bind=True, name="peers.stamp")
def stamp(self: Any, i: int, t: float) -> None:
    started = time.time()
    ledger.record(i, self.request.id, started, t)
