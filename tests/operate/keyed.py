"""An app with a concurrency limit per key (2 per customer), for the worker processes of
the concurrency tests. The handler records `start|end customer job pid time` lines in
the ledger (ONCEQ_TEST_LEDGER) with O_APPEND, with times from the wall clock."""

from __future__ import annotations

import os
import time

from onceq import App, current_job

app = App(retention=None)


def ledger(event: str, customer_id: int) -> None:
    path = os.environ["ONCEQ_TEST_LEDGER"]
    line = f"{event} {customer_id} {current_job().job_id} {os.getpid()} {time.time()!r}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.task(concurrency_key="customer:{customer_id}", concurrency=2, retries=20, retry_backoff=0)
def serve(customer_id: int, seconds: float) -> None:
    ledger("start", customer_id)
    time.sleep(seconds)
    ledger("end", customer_id)


@app.task
def plain(n: int) -> int:
    return n


def read(path: str | os.PathLike[str]) -> list[tuple[str, int, int, int, float]]:
    """The ledger's lines: (event, customer, job, pid, time)."""
    rows = []
    with open(path) as f:
        for line in f:
            event, customer, job, pid, at = line.split()
            rows.append((event, int(customer), int(job), int(pid), float(at)))
    return rows
