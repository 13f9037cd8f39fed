"""Running `onceq` as a user does: a real subprocess, in a folder of its own, with the
environment a test gives it (no ONCEQ_URL unless the test sets one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.app.apps:app"


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONCEQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["COLUMNS"] = env.get("COLUMNS", "200")
    return {**env, **extra}


def onceq(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onceq", *args],
        cwd=cwd,
        env=env or environment(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def start(*args: str, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`onceq ARGS` in the background, its output (both streams) in the file `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "onceq", *args], cwd=cwd, env=env, stdout=out, stderr=out
        )
