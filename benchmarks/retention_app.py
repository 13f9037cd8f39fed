"""The app of benchmarks/retention.py's worker processes: one no-op task, and the
retention the benchmark asks for (ONCEQ_BENCH_RETENTION seconds)."""

from __future__ import annotations

import os

from onceq import App

app = App(retention=float(os.environ.get("ONCEQ_BENCH_RETENTION", "60")))


@app.task(name="bench.noop")
def noop() -> None:
    return None
