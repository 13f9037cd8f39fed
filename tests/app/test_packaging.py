"""`pip install onceq` is the SQLite store with nothing else: psycopg is imported only
for a PostgreSQL URL, and its absence is one line naming the extra to install. (CI also
builds the wheel and runs it from a fresh venv: `make wheel-check`.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)  # fmt: skip


def test_sqlite_needs_no_psycopg_and_postgres_says_which_extra(tmp_path: Path) -> None:
    result = _python(f"""
        import sys
        sys.modules["psycopg"] = sys.modules["psycopg_pool"] = None  # as if not installed
        from onceq import App, ConfigError
        app = App("sqlite:///{tmp_path}/s.db")
        @app.task
        def add(a: int, b: int) -> int:
            return a + b
        job = add.enqueue(a=1, b=2)
        app.run_until_idle()
        print("result", app.wait(job).result)
        try:
            App("postgresql://postgres@127.0.0.1:1/x").store
        except ConfigError as exc:
            print("error", exc)
    """, tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "result 3",
        "error a PostgreSQL store needs psycopg (psycopg is missing): "
        "pip install 'onceq[postgres]'",
    ]
