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
