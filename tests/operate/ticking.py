"""An app with periodic tasks, for the periodic tests' worker processes: two every=1
tasks, one with the default catch-up (1) and one that catches up everything."""

from __future__ import annotations

import os
from datetime import datetime

from onceq import App, current_job

app = App(retention=None)


def ledger(line: str) -> None:
    path = os.environ.get("ONCEQ_TEST_LEDGER")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


@app.periodic(every=1)
def each_second(tick: datetime) -> str:
    ledger(f"each_second {tick.isoformat()} {current_job().job_id} {os.getpid()}")
    return tick.isoformat()


@app.periodic(every=1, catch_up=1000)
def every_tick(tick: datetime) -> str:
    ledger(f"every_tick {tick.isoformat()} {current_job().job_id} {os.getpid()}")
    return tick.isoformat()
