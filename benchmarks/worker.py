"""Worker throughput and latency, on both backends, side by side in one run.

- no-op throughput: 20,000 jobs enqueued first, then 2 worker processes (concurrency
  --concurrency each), jobs/s from the first start to the last finish;
- enqueue -> start latency: 200 jobs 10 ms apart to an idle worker, p50/p95/p99 on the
  store's own clock.

    python benchmarks/worker.py [--backends sqlite,postgres] [--jobs 20000]
                                [--concurrency 64] [--json]

The same scenarios run inside `onceq bench` (onceq.tools.bench); PostgreSQL uses
ONCEQ_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test), each run
in a fresh schema dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os

from onceq.tools.bench import Bench, Sizes, isolated

PG_URL = os.environ.get("ONCEQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = Sizes(jobs=args.jobs, concurrency=args.concurrency)
    figures = []
    for backend in args.backends.split(","):
        with isolated(backend, PG_URL) as url:
            bench = Bench(backend, url, sizes, lambda m: print(m, flush=True))
            try:
                figures += bench.throughput() + bench.latency()
            finally:
                bench.close()
    if args.json:
        print(json.dumps([f.to_json() for f in figures], indent=2))
        return
    for f in figures:
        print(f"{f.backend:9} {f.scenario:18} {f.value:10,.1f} {f.unit:7} {f.detail}")


if __name__ == "__main__":
    main()
