"""Typed tasks: mypy --strict on a user's app (tests/typing/sample_app.py) reports
exactly the errors its comments expect — wrong or missing arguments at enqueue, a
result used as the wrong type — and nothing on the lines that are right."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "typing" / "sample_app.py"


def test_mypy_reports_exactly_the_expected_errors() -> None:
    expected = {
        (n, code)
        for n, line in enumerate(SAMPLE.read_text().splitlines(), start=1)
        for code in re.findall(r"# error: ([\w-]+)", line)
    }
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--hide-error-context",
         "--cache-dir", str(ROOT / ".mypy_cache"), str(SAMPLE)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    found = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"sample_app\.py:(\d+): error: .*\[([\w-]+)\]$", result.stdout, re.M)
    }
    assert found == expected, result.stdout
    assert "py.typed" not in result.stdout  # onceq is a typed package
