"""Fixtures for the operating tests: `onceq` commands and worker fleets as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.operate.apps:app"

_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _reap_fleets() -> Iterator[None]:
    """Whatever a test leaves running (it failed half-way) is killed and waited for."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def fleet(
    url: str, log: Path, *args: str, env: dict[str, str] | None = None, app: str = APP
) -> subprocess.Popen[bytes]:
    """`onceq worker --app tests.operate.apps:app …`, leading a process group of its own;
    its log goes to `log`."""
    environment = {**os.environ, "ONCEQ_URL": url, **(env or {})}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "onceq", "worker", "--app", app, *args],
            cwd=ROOT, env=environment, stderr=out, start_new_session=True,
        )  # fmt: skip
    _STARTED.append(process)
    return process


def onceq(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One `onceq` command, as a user runs it."""
    env = {**os.environ, "ONCEQ_URL": url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "onceq", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def parent_of(pid: int) -> int | None:
    """The parent process of `pid`, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])
