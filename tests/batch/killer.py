"""SIGKILL the onceq worker process this command runs under, once per marker (as a
crash at that point would): `python killer.py MARKER [--on N]` kills on the Nth call."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def worker_pid() -> int:
    """The nearest ancestor that is a worker process: the leader of its own process
    group (a worker makes one, for it and whatever it starts)."""
    pid = os.getppid()
    while pid > 1:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if int(fields[2]) == pid:
            return pid
        pid = int(fields[1])
    raise SystemExit("no worker above this process")


def kill_worker_once(marker: str, on: int = 1) -> None:
    folder = Path(os.environ["KILL_DIR"])
    counter = folder / f"{marker}.calls"
    calls = len(counter.read_text()) if counter.exists() else 0
    counter.write_text("x" * (calls + 1))
    if calls + 1 != on:
        return
    (folder / f"{marker}.killed").write_text(os.environ.get("ONCEQ_TASK_NUMBER", ""))
    os.kill(worker_pid(), signal.SIGKILL)
    signal.pause()  # the worker's group goes with it (its supervisor kills the group)


if __name__ == "__main__":
    args = sys.argv[1:]
    kill_worker_once(args[0], int(args[2]) if len(args) > 2 and args[1] == "--on" else 1)
