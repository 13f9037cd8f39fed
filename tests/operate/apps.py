"""Tasks for the operating tests, importable by `onceq worker` children.

Handlers append `what key job pid start end` lines to a ledger file
(ONCEQ_TEST_LEDGER) with O_APPEND, so tests can check overlap and counts independently
of the store.
"""

from __future__ import annotations

import os
import time

from onceq import App, current_job

app = App()  # ONCEQ_URL, set by the test for the worker processes


def ledger(line: str) -> None:
    path = os.environ.get("ONCEQ_TEST_LEDGER")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@app.task
def noop(n: int = 0) -> int:
    return n


@app.task
def nap(seconds: float) -> None:
    ledger(f"nap - {current_job().job_id} {os.getpid()} {time.time()} -")
    time.sleep(seconds)


@app.task
def boom() -> None:
    raise ValueError("boom")


@app.task(queue="slow")
def later(n: int = 0) -> int:
    """On a queue the tests' workers do not serve: its jobs stay pending (or are claimed
    by hand)."""
    return n


def run_worker(url: str, options: dict[str, object], retention: float | None) -> None:
    """Target of a bare worker process: this app, a given retention, worker options."""
    app.use(url)
    app.retention = retention
    app.worker(**options).run()  # type: ignore[arg-type]
