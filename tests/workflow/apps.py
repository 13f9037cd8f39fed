"""Workflow tasks for the tests, importable by worker processes.

`meet` makes fan-out items finish at the same moment across worker processes: each
item drops a file in a directory per (run, group) and waits until its whole group has
arrived, then all return together — so their completions race into the store.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from onceq import App, current_job
from onceq.tools.probe import barrier
from tests.worker.apps import ledger

app = App()


@app.task
def meet(n: int, dir: str, groups: list[int]) -> int:
    """Item n of a fan-out; `groups` are the sizes of the batches that finish together."""
    start = 0
    for index, size in enumerate(groups):
        if n < start + size:
            barrier(Path(dir) / str(current_job().run_id) / str(index), n, size)
            break
        start += size
    ledger(f"item:{n}")
    return n


@app.task
def join(values: list[Any]) -> list[Any]:
    ledger("join")
    return values


@app.task
def timed(n: int, low: float = 0.01, high: float = 0.05) -> int:
    ledger(f"start:{n}:{time.time():.6f}")
    time.sleep(random.uniform(low, high))
    ledger(f"end:{n}:{time.time():.6f}")
    return n


@app.task(retries=3, retry_backoff=0)
def slow_once(n: int, seconds: float) -> int:
    ledger(f"item:{n}")
    if current_job().attempt == 1:
        time.sleep(seconds)
    return n


@app.task
def noop(n: int) -> int:
    ledger(f"item:{n}")
    return n


def run_worker(url: str, ledger_path: str, options: dict[str, Any]) -> None:
    """A bare worker process whose log goes to LEDGER.log."""
    os.environ["ONCEQ_TEST_LEDGER"] = ledger_path
    handler = logging.FileHandler(f"{ledger_path}.log")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("onceq")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    app.use(url)
    app.worker(**options).run()
