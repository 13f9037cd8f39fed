"""The README's batch example runs as written: four tasks merged into a fresh repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "batch"


def test_the_example_batch_merges_its_four_tasks(tmp_path: Path) -> None:
    here = tmp_path / "batch"
    shutil.copytree(EXAMPLE, here, ignore=shutil.ignore_patterns("calc", "*.db*"))
    env = {**os.environ, "AGENT_SECONDS": "0.1"}
    done = subprocess.run([sys.executable, str(here / "demo.py")], env=env, text=True,
                          capture_output=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    log = subprocess.run(["git", "log", "--format=%s", "main"], cwd=here / "calc", text=True,
                         capture_output=True, check=True).stdout.splitlines()  # fmt: skip
    assert sorted(log[:4]) == ["1.1: Add add()", "1.2: Add sub()", "1.3: Add mul()",
                               "2.1: Export the operations"]  # fmt: skip
    assert log[0] == "2.1: Export the operations"  # batch 2 after batch 1
    assert "4 of 4 task(s) merged" in done.stdout
    tests = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=here / "calc",
                           capture_output=True, text=True)  # fmt: skip
    assert tests.returncode == 0, tests.stderr
