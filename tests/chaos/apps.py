"""Tasks of the fault-injection tier, importable by worker processes and their children.

Every handler writes its start and end to the ledger (see harness.ledger_write), so the
checker counts executions independently of the job store. Names are explicit
(`chaos.*`): the same names are registered on fresh Apps in the test process.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onceq import App, current_job
from tests.chaos.harness import CHILD_ENV, GATES_ENV, ledger_write

app = App()  # ONCEQ_URL, set by the test before the process starts

if os.environ.get(CHILD_ENV):  # a process a chaos test started: stacks on SIGUSR1
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _until(condition: Callable[[], bool], limit: float = 120.0) -> bool:
    """Poll `condition` (or the lease being lost) for at most `limit` seconds."""
    deadline = time.monotonic() + limit
    ctx = current_job()
    while time.monotonic() < deadline:
        if condition() or ctx.should_stop():
            return condition()
        time.sleep(0.005)
    return False


def gate_open(name: str) -> bool:
    return (Path(os.environ[GATES_ENV]) / name).exists()


# -- plain work ------------------------------------------------------------------------


@app.task(name="chaos.short", retries=5, retry_backoff=0)
def short(n: int, sleep: float = 0.0) -> int:
    ledger_write("start")
    if sleep:
        time.sleep(sleep)
    ledger_write("end")
    return n


@app.task(name="chaos.once")
def once(n: int, sleep: float = 0.0) -> int:
    """No retries: a lost attempt fails it (the lost-answers scenario checks none is)."""
    ledger_write("start")
    if sleep:
        time.sleep(sleep)
    ledger_write("end")
    return n


@app.task(name="chaos.slow_first", retries=5, retry_backoff=0)
def slow_first(seconds: float) -> str:
    """Sleeps on its first attempt only (the test kills its worker meanwhile)."""
    ledger_write("start")
    if current_job().attempt == 1:
        time.sleep(seconds)
    ledger_write("end")
    return "done"


@app.task(name="chaos.gated", retries=5, retry_backoff=0)
def gated(gate: str) -> str:
    """Holds its slot until the test opens `gate`."""
    ledger_write("start")
    if not _until(lambda: gate_open(gate)):
        raise RuntimeError(f"gate {gate} not opened (or lease lost)")
    ledger_write("end")
    return gate


@app.task(name="chaos.blob")
def blob(data: str) -> int:
    ledger_write("start", size=len(data))
    ledger_write("end")
    return len(data)


# -- zombies (scenario 2) --------------------------------------------------------------


@app.task(name="chaos.zombie", retries=1, retry_backoff=0)
def zombie() -> str:
    """Attempt 1 holds on until it is told its lease is lost, then returns anyway."""
    ledger_write("start")
    ctx = current_job()
    if ctx.attempt == 1:
        deadline = time.monotonic() + 120
        while not ctx.should_stop() and time.monotonic() < deadline:
            time.sleep(0.002)
        ledger_write("told", told=ctx.should_stop())
        return "late"
    ledger_write("end")
    return "rescued"


@app.task(name="chaos.zombie_async", retries=1, retry_backoff=0)
async def zombie_async() -> str:
    ledger_write("start")
    ctx = current_job()
    if ctx.attempt == 1:
        deadline = time.monotonic() + 120
        try:
            while not ctx.should_stop() and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
        except asyncio.CancelledError:
            ledger_write("told", told=ctx.should_stop(), cancelled=True)
            raise
        ledger_write("told", told=ctx.should_stop())
        return "late"
    ledger_write("end")
    return "rescued"


@app.task(name="chaos.zombie_subprocess", retries=1, retry_backoff=0, subprocess=True)
def zombie_subprocess() -> str:
    """Attempt 1 ticks in the ledger until its process is killed (its lease lost)."""
    ledger_write("start")
    if current_job().attempt == 1:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ledger_write("tick")
            time.sleep(0.02)
        return "late"
    ledger_write("end")
    return "rescued"


# -- misbehaving handlers (scenario 6) -------------------------------------------------


@app.task(name="chaos.raise_retry", retries=2, retry_backoff=0)
def raise_retry() -> None:
    ledger_write("start")
    raise RuntimeError(f"attempt {current_job().attempt}")


@app.task(name="chaos.raise_fatal", retries=5, retry_backoff=0, retry_on=(ConnectionError,))
def raise_fatal() -> None:
    ledger_write("start")
    raise ValueError("not worth a retry")


@app.task(name="chaos.flaky", retries=3, retry_backoff=0)
def flaky() -> int:
    ledger_write("start")
    attempt = current_job().attempt
    if attempt < 3:
        raise ConnectionError(f"flaky attempt {attempt}")
    ledger_write("end")
    return attempt


@app.task(name="chaos.hang_thread", retries=1, retry_backoff=0, timeout=0.5)
def hang_thread(seconds: float) -> str:
    """Runs past its timeout: the worker abandons the thread; its late result is refused."""
    ledger_write("start")
    time.sleep(seconds)
    ledger_write("late_end")
    return "late"


@app.task(name="chaos.hang_async", retries=1, retry_backoff=0, timeout=0.5)
async def hang_async() -> None:
    ledger_write("start")
    await asyncio.sleep(120)


@app.task(name="chaos.hang_subprocess", retries=1, retry_backoff=0, timeout=0.5, subprocess=True)
def hang_subprocess() -> None:
    ledger_write("start")
    time.sleep(120)


@app.task(name="chaos.exit_subprocess", retries=1, retry_backoff=0, subprocess=True)
def exit_subprocess() -> None:
    ledger_write("start")
    os._exit(7)


@app.task(name="chaos.raise_subprocess", subprocess=True)
def raise_subprocess() -> None:
    ledger_write("start")
    raise ValueError("raised in the subprocess")


@app.task(name="chaos.bad_result", retries=3, retry_backoff=0)
def bad_result() -> object:
    ledger_write("start")
    return object()  # no JSON form, whatever the annotation


@app.task(name="chaos.exit_worker", queue="poison", retries=1, retry_backoff=0)
def exit_worker() -> None:
    """Kills its own worker process."""
    ledger_write("start")
    os._exit(3)


@app.task(name="chaos.short_poison_queue", queue="poison", retries=3, retry_backoff=0)
def short_poison_queue(n: int) -> int:
    ledger_write("start")
    ledger_write("end")
    return n


# -- fan-in (scenario 9) ---------------------------------------------------------------


@app.task(name="chaos.item", queue="items", retries=20, retry_backoff=0)
def item(key: str, value: int) -> int:
    """Waits for its run's gate, so a run's items finish together."""
    ledger_write("start")
    if not _until(lambda: gate_open(key)):
        raise RuntimeError(f"gate {key} not opened (or lease lost)")
    ledger_write("end")
    return value * 10


@app.task(name="chaos.join", queue="join", retries=3, retry_backoff=0)
def join(key: str, values: list[int]) -> dict[str, Any]:
    ledger_write("start")
    ledger_write("end")
    return {"key": key, "sum": sum(values), "count": len(values)}


# -- hostile names (scenario 10) -------------------------------------------------------


def echo(**payload: Any) -> dict[str, Any]:
    """Returns what it was given (registered under hostile names by the test)."""
    ledger_write("start")
    ledger_write("end")
    return payload
