"""onceq: plain handlers run on the worker's threads; `noop_async` on its event loop."""

from __future__ import annotations

import time

from apps import ledger
from onceq import App, current_job

app = App()  # ONCEQ_URL, set by the harness for the worker processes


@app.task
def noop(i: int) -> None:
    ledger.record(i, current_job().job_id, time.time())


@app.task
async def noop_async(i: int) -> None:
    ledger.record(i, current_job().job_id, time.time())


@app.task
def stamp(i: int, t: float) -> None:
    started = time.time()
    ledger.record(i, current_job().job_id, started, t)
