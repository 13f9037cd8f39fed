"""The cost of one completion in a large fan-out, at 1,000 and 10,000 items, side by side.

A `with_items` step of N items with concurrency 8: each completion of an item records it
and dispatches the next one, in one transaction. The time of those transactions should
not depend on N (it used to grow with it: 7 ms per completion at 500 items, 42 ms at
8,000).

    python benchmarks/fanout.py [--items 1000,10000] [--completions 300]
                                [--backends sqlite,postgres] [--json]

PostgreSQL: ONCEQ_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
each run uses a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from typing import Any

import psycopg

from onceq import App, Workflow

PG_URL = os.environ.get("ONCEQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def measure(url: str, items: int, completions: int) -> dict[str, Any]:
    app = App(url)
    app.task(name="bench.item")(lambda n, folder: n)
    flow = Workflow("fanout", input=["items", "folder"]).step(
        "fan", "bench.item", with_items="$input.items",
        args={"n": "$item", "folder": "$input.folder"}, concurrency=8,
    )  # fmt: skip
    started = time.perf_counter()
    app.run_workflow(flow, {"items": list(range(items)), "folder": "/tmp/x"})
    start_s = time.perf_counter() - started
    store = app.store
    times = []
    for _ in range(completions):
        (lease,) = store.job_claim("bench", None, 1, 60.0)
        t0 = time.perf_counter()
        store.job_complete(lease, lease.job_id)  # records it, dispatches the next item
        times.append(time.perf_counter() - t0)
    app.close()
    return {
        "items": items,
        "completions": completions,
        "p50_ms": round(statistics.median(times) * 1000, 3),
        "p90_ms": round(sorted(times)[int(len(times) * 0.9)] * 1000, 3),
        "step_start_ms": round(start_s * 1000, 1),
    }


def run(backend: str, items: list[int], completions: int) -> list[dict[str, Any]]:
    out = []
    for n in items:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                result = measure(f"sqlite:///{folder}/bench.db", n, completions)
        else:
            schema = f"onceq_bench_{uuid.uuid4().hex[:10]}"
            try:
                result = measure(f"{PG_URL}?schema={schema}", n, completions)
            finally:
                with psycopg.connect(PG_URL, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        out.append({"backend": backend, **result})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="1000,10000")
    parser.add_argument("--completions", type=int, default=300)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    items = [int(n) for n in args.items.split(",")]
    rows = [r for b in args.backends.split(",") for r in run(b, items, args.completions)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'backend':<9} {'items':>7} {'p50 ms':>8} {'p90 ms':>8} {'step start ms':>14}")
    for r in rows:
        print(f"{r['backend']:<9} {r['items']:>7} {r['p50_ms']:>8} {r['p90_ms']:>8} "
              f"{r['step_start_ms']:>14}")  # fmt: skip


if __name__ == "__main__":
    main()
