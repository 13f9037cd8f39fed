"""What a large backlog costs the hot path: claim+complete throughput on a store that also
holds --pending pending jobs (of another queue, due, never claimed here) and --finished
finished ones, beside the same on a store without them, side by side in one run.

Each scenario: a fresh store (SQLite file, or a PostgreSQL schema), the backlog written
straight into it with one statement, statistics as autovacuum would leave them (taken
while the backlog was being written: ANALYZE before the pending rows arrive), then --jobs
jobs of the measured queue; 2 processes each loop a worker's cycle through the Store
(job_complete_and_claim: the last batch's results, then the next claim of --batch) on
that queue until it is empty. Rounds alternate the two stores (--rounds each).

    python benchmarks/backlog.py [--backends sqlite,postgres] [--pending 1000000]
        [--finished 1000000] [--jobs 20000] [--batch 64] [--rounds 3] [--json]

PostgreSQL: ONCEQ_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test),
each store in a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from claim import _timed

from onceq.models import NewJob
from onceq.store import open_store
from onceq.store.urls import parse_url
from onceq.tools.bench import isolated

PG_URL = os.environ.get("ONCEQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
QUEUE = "measured"

SQLITE_ROWS = """
WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n)
INSERT INTO onceq_jobs (queue, task, args, status, run_at, attempts, lease_token, worker,
                        result, created_at, started_at, finished_at)
SELECT 'backlog', 'bench.noop', '{}', :status, :now, :tried, :tried, :worker, :result,
       :now, :started, :finished
FROM n
"""
PG_ROWS = """
INSERT INTO onceq_jobs (queue, task, args, status, attempts, lease_token, worker, result,
                        started_at, finished_at)
SELECT 'backlog', 'bench.noop', '{}', %(status)s, %(tried)s, %(tried)s, %(worker)s,
       %(result)s::json, %(started)s, %(finished)s
FROM generate_series(1, %(n)s)
"""


def _fill(url: str, pending: int, finished: int) -> None:
    """The backlog, written straight into the store: finished rows, statistics, pending."""
    parsed = parse_url(url)
    done = {"status": "succeeded", "tried": 1, "worker": "backlog", "result": "null"}
    todo = {"status": "pending", "tried": 0, "worker": None, "result": None}
    if parsed.dialect == "sqlite":
        import sqlite3

        conn = sqlite3.connect(parsed.target, isolation_level=None)
        now = time.time()
        for n, row in ((finished, done), (pending, todo)):
            when = now if row is done else None
            conn.execute("BEGIN")
            conn.execute(SQLITE_ROWS, {"n": n, "now": now, "started": when, "finished": when,
                                       **row})  # fmt: skip
            conn.execute("COMMIT")
            if row is done:
                conn.execute("ANALYZE")
        conn.close()
        return
    schema = parsed.options["schema"]
    with psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={schema}") as conn:
        for n, row in ((finished, done), (pending, todo)):
            when = "now()" if row is done else None
            conn.execute(PG_ROWS.replace("%(started)s", when or "NULL").replace(
                "%(finished)s", when or "NULL"), {"n": n, **row})  # fmt: skip
            if row is done:
                conn.execute("ANALYZE onceq_jobs")


def _cycle(url: str, worker: str, batch: int) -> int:
    store = open_store(url)
    done = 0
    leases = store.job_claim(worker, [QUEUE], batch, 60)
    while leases:
        written, leases = store.job_complete_and_claim(
            [(x, "null") for x in leases], worker, [QUEUE], batch, 60
        )
        done += len(written)
    store.close()
    return done


@contextlib.contextmanager
def _store(backend: str, pending: int, finished: int) -> Iterator[str]:
    with isolated(backend, PG_URL) as url:
        open_store(url).close()  # migrated
        if pending or finished:
            _fill(url, pending, finished)
        yield url


def _round(url: str, jobs: int, batch: int) -> float:
    store = open_store(url)
    for start in range(0, jobs, 10_000):
        store.job_insert_many(
            [NewJob(task="bench.noop", queue=QUEUE) for _ in range(min(10_000, jobs - start))]
        )
    store.close()
    return _timed(_cycle, [(url, f"w{p}", batch) for p in range(2)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for backend in args.backends.split(","):
        print(f"{backend}: writing the backlog…", flush=True)
        with (
            _store(backend, 0, 0) as plain,
            _store(backend, args.pending, args.finished) as loaded,
        ):
            figures: dict[str, list[float]] = {"plain": [], "backlog": []}
            for _ in range(args.rounds):
                figures["plain"].append(_round(plain, args.jobs, args.batch))
                figures["backlog"].append(_round(loaded, args.jobs, args.batch))
        row = {
            "backend": backend,
            "plain_jobs_per_s": round(statistics.median(figures["plain"])),
            "backlog_jobs_per_s": round(statistics.median(figures["backlog"])),
            "rounds": {k: [round(v) for v in vs] for k, vs in figures.items()},
        }
        row["ratio"] = round(row["backlog_jobs_per_s"] / row["plain_jobs_per_s"], 3)
        results.append(row)
        if not args.json:
            print(
                f"{backend:9} without backlog {row['plain_jobs_per_s']:8,} jobs/s   with "
                f"{args.pending:,} pending + {args.finished:,} finished "
                f"{row['backlog_jobs_per_s']:8,} jobs/s   ratio {row['ratio']:.2f}   "
                f"(rounds {row['rounds']})",
                flush=True,
            )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
