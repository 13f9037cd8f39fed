"""The execution ledger: every handler appends one line per execution.

One file per process (`<pid>.log` in $PEERS_LEDGER_DIR), opened O_APPEND on first use
in that process (so forked children open their own). A line is
`<i> <job id> <handler start, time.time()> <enqueue time or 0>`: small enough that
one os.write() is atomic even with many threads of one process appending at once.
"""

from __future__ import annotations

import os

_fds: dict[int, int] = {}


def _fd() -> int:
    pid = os.getpid()
    fd = _fds.get(pid)
    if fd is None:
        path = os.path.join(os.environ["PEERS_LEDGER_DIR"], f"{pid}.log")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fds[pid] = fd
    return fd


def record(i: int, job_id: object, started: float, enqueued: float = 0.0) -> None:
    """Note one execution of job number `i` (its queue's id is `job_id`)."""
    os.write(_fd(), f"{i} {job_id} {started:.6f} {enqueued:.6f}\n".encode())
