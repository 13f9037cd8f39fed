"""Tasks for the worker tests, importable by worker and subprocess children.

Every handler appends to a ledger file (ONCEQ_TEST_LEDGER) with O_APPEND, so the tests
count executions independently of the job store: `job attempt pid event`.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from onceq import App, current_job

app = App()  # ONCEQ_URL, set by the test before the child starts


def ledger(event: str) -> None:
    path = os.environ.get("ONCEQ_TEST_LEDGER")
    if not path:
        return
    ctx = current_job()
    line = f"{ctx.job_id} {ctx.attempt} {os.getpid()} {event}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_ledger(path: str | Path) -> list[tuple[int, int, int, str]]:
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    for line in p.read_text().splitlines():
        job, attempt, pid, event = line.split()
        rows.append((int(job), int(attempt), int(pid), event))
    return rows


@app.task
def record(n: int) -> int:
    ledger("run")
    return n


@app.task(retries=3, retry_backoff=0)
def sleepy(seconds: float) -> str:
    ledger("start")
    time.sleep(seconds)
    ledger("end")
    return "done"


@app.task(retries=3, retry_backoff=0)
def slow_first_attempt(seconds: float) -> str:
    """Sleeps on attempt 1 only (the test kills the worker meanwhile)."""
    ledger("start")
    if current_job().attempt == 1:
        time.sleep(seconds)
    ledger("end")
    return "done"


@app.task(retries=2, retry_backoff=0)
def poison() -> None:
    ledger("start")
    os._exit(3)


@app.task(retries=1, retry_backoff=0, timeout=0.3, subprocess=True)
def hang_in_subprocess() -> None:
    ledger("start")
    time.sleep(60)


@app.task(retries=1, retry_backoff=0, subprocess=True)
def raise_in_subprocess(message: str) -> None:
    ledger("start")
    raise ValueError(message)


@app.task(subprocess=True)
def double_in_subprocess(n: int) -> int:
    ledger("run")
    return 2 * n


@app.task(subprocess=True)
def exit_in_subprocess() -> None:
    os._exit(7)


@app.task
async def async_record(n: int) -> int:
    await asyncio.sleep(0)
    ledger("run")
    return n


def run_worker(url: str, ledger_path: str, options: dict[str, object]) -> None:
    """Target of a bare worker process (no supervisor): what a plain `app.worker().run()`
    in a user's own process does."""
    os.environ["ONCEQ_TEST_LEDGER"] = ledger_path
    app.use(url)
    app.worker(**options).run()  # type: ignore[arg-type]
