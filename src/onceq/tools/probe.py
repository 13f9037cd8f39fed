"""Probe tasks for `onceq diagnose` and `onceq bench`.

Every execution is written to a ledger that does not depend on the job store: an
append-only file (ONCEQ_PROBE_LEDGER), one line per handler start, `job token pid`,
written with O_APPEND so lines from many processes never interleave.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from onceq import App, current_job

app = App()  # pointed at the store under test by the tool (App.use)


def record() -> None:
    """Append this execution to the ledger, if one is set."""
    path = os.environ.get("ONCEQ_PROBE_LEDGER")
    if not path:
        return
    job = current_job()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job.job_id} {job.token} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def read_ledger(path: Path) -> list[tuple[int, int, int]]:
    """(job id, token, pid) of every execution recorded."""
    if not path.exists():
        return []
    return [
        (int(job), int(token), int(pid))
        for job, token, pid in (line.split() for line in path.read_text().splitlines())
    ]


def barrier(folder: Path, me: int, size: int, timeout: float = 10.0) -> None:
    """Wait until `size` callers (in any process) have arrived in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(me)).touch()
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < size and time.monotonic() < deadline:
        time.sleep(0.0005)


@app.task(name="onceq.probe.run", retries=3, retry_backoff=0)
def run(seconds: float = 0.0) -> int:
    """Record the execution, take `seconds`, return the job id."""
    record()
    if seconds:
        time.sleep(seconds)
    return current_job().job_id


@app.task(name="onceq.probe.noop")
def noop() -> None:
    """Nothing at all (throughput)."""


@app.task(name="onceq.probe.item", retries=3, retry_backoff=0)
def item(n: int, folder: str, groups: list[int]) -> int:
    """A fan-out item; the items of each group finish together (a barrier)."""
    record()
    start = 0
    for index, size in enumerate(groups):
        if n < start + size:
            barrier(Path(folder) / str(current_job().run_id) / str(index), n, size)
            break
        start += size
    return n


@app.task(name="onceq.probe.join", retries=3, retry_backoff=0)
def join(values: list[Any]) -> int:
    """The fan-in: records its execution and counts what it was given."""
    record()
    return len(values)
