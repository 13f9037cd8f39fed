"""Running an agent or a verification step: a shell command in a worktree, bounded by
a timeout and by the job's lease (a handler told to stop kills what it started).

The command stays in the worker's process group, so a worker that dies takes its
commands with it (the supervisor kills the group); a command stopped here is killed
with every process under it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KEEP = 8000  # characters of output kept as feedback: the end, where errors are


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
    """Run `command` with /bin/sh in `cwd`; its output (stdout and stderr) kept."""
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, errors="replace")  # fmt: skip
    except OSError as exc:
        return Ran(command, None, "", f"cannot start: {exc.strerror}")
    deadline = time.monotonic() + timeout
    chunks: list[str] = []
    why = ""
    while True:
        try:
            text, _ = proc.communicate(timeout=0.1)
            chunks.append(text or "")
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                why = f"timed out after {timeout:g}s"
            elif should_stop():
                why = "stopped: the task's lease was lost"
            else:
                continue
        _kill_tree(proc.pid)
        text, _ = proc.communicate()
        chunks.append(text or "")
        break
    output = "".join(chunks)[-KEEP:]
    return Ran(command, None if why else proc.returncode, output, why)


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
