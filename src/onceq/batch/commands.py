"""Running an agent or a verification step: a shell command in a worktree, bounded by
a timeout and by the job's lease (a handler told to stop kills what it started).

The command stays in the worker's process group, so a worker that dies takes its
commands with it (the supervisor kills the group); a command stopped here is killed
with every process under it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

KEEP = 8000  # bytes of output kept as feedback: the end, where errors are
LOOK_EVERY = 0.05  # seconds between looks at the timeout and the lease while it runs


@dataclass(frozen=True, slots=True)
class Ran:
    command: str
    code: int | None  # None: killed (timeout or lost lease)
    output: str
    why: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    def describe(self) -> str:
        """One line: what ran and how it ended."""
        how = self.why or f"exit {self.code}"
        return f"`{self.command}` failed ({how})"


def run(
    command: str,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    should_stop: Callable[[], bool],
) -> Ran:
    """Run `command` with /bin/sh in `cwd`; the end of its output (stdout and stderr)
    kept. It is over when the shell exits: a background child it left, still holding
    the output pipe, is not waited for (it dies with the worker)."""
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)  # fmt: skip
    except OSError as exc:
        return Ran(command, None, "", f"cannot start: {exc.strerror}")
    assert proc.stdout is not None
    tail = _Tail(proc.stdout)
    deadline = time.monotonic() + timeout
    why = ""
    with _ended(proc) as ended:
        while not ended(LOOK_EVERY):
            if time.monotonic() >= deadline:
                why = f"timed out after {timeout:g}s"
            elif should_stop():
                why = "stopped: the task's lease was lost"
            else:
                continue
            _kill_tree(proc.pid)
            proc.wait()
            break
    output = tail.text(drain=0.2)
    return Ran(command, None if why else proc.returncode, output, why)


@contextlib.contextmanager
def _ended(proc: subprocess.Popen[bytes]) -> Iterator[Callable[[float], bool]]:
    """A wait for the command's end that wakes the moment it exits: on a pidfd where
    Linux has them (Popen.wait(timeout) polls, sleeping up to 50 ms between looks; each
    task waits for two or three commands on its critical path)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or before 5.3

        def polled(seconds: float) -> bool:
            try:
                proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                return False
            return True

        yield polled
        return

    def woken(seconds: float) -> bool:
        if not select.select([fd], [], [], seconds)[0]:
            return False
        proc.wait()
        return True

    try:
        yield woken
    finally:
        os.close(fd)


class _Tail:
    """Reads a pipe on a thread of its own, keeping only its last KEEP bytes."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe, self.kept = pipe, bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(self.pipe.fileno(), 65536):
                self.kept += chunk
                del self.kept[: max(0, len(self.kept) - KEEP)]

    def text(self, drain: float) -> str:
        self.thread.join(drain)  # what the shell wrote before it exited
        data = bytes(self.kept)
        return data.decode("utf-8", "replace").replace("\0", "\\0")


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything under it (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    todo, found = [pid], []
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    for p in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
