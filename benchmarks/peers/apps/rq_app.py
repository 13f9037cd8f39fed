"""RQ: plain functions, found by their import path."""

from __future__ import annotations

import time

from rq import get_current_job

from apps import ledger


def noop(i: int) -> None:
    started = time.time()
    job = get_current_job()
    ledger.record(i, job.id if job else "?", started)


def stamp(i: int, t: float) -> None:
    started = time.time()
    job = get_current_job()
    ledger.record(i, job.id if job else "?", started, t)
