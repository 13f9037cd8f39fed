"""Claim+complete throughput of the store, beside the raw-SQL ceiling, in one run.

For each backend, batch size (1, 100) and process count (1, 2): enqueue the jobs, then
every process loops a worker's cycle — the last batch's results, then a claim of the
next (job_complete_and_claim) — until the queue is empty. "onceq" goes through the
Store; "bare" runs the very same statements (the dialect's queries file) from a bare
driver loop, so the ratio is the cost of onceq's own layers.

    python benchmarks/claim.py [--jobs 20000] [--backends sqlite,postgres] [--json]

PostgreSQL: ONCEQ_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
each run uses a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sqlite3
import tempfile
import time
import uuid
from typing import Any

import psycopg

from onceq.models import NewJob
from onceq.store import open_store, queries

PG_URL = os.environ.get("ONCEQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _onceq_loop(url: str, worker: str, batch: int) -> int:
    """A worker's cycle through the Store: the last batch's results, then the next claim."""
    store = open_store(url)
    done = 0
    leases = store.job_claim(worker, ["default"], batch, 60)
    while leases:
        written, leases = store.job_complete_and_claim(
            [(x, "null") for x in leases], worker, ["default"], batch, 60
        )
        done += len(written)
    store.close()
    return done


def _bare_sqlite_loop(path: str, worker: str, batch: int) -> int:
    """The statements SqliteStore runs for that cycle, in one transaction: the results,
    their attempts' records, the claim."""
    q = queries.load("sqlite")
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA synchronous=FULL")
    done = 0
    rows: list[Any] = []
    while True:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        if rows:
            body = ",".join(f"[{r[0]},{r[1]},null]" for r in rows)
            kept = conn.execute(q["job_complete"], {"now": now, "batch": f"[{body}]"}).fetchall()
            leases = json.dumps([[r[0], r[1]] for r in kept])
            conn.execute(q["attempt_end"], {"now": now, "outcome": "succeeded", "error": None,
                                            "back": 0, "leases": leases})  # fmt: skip
            done += len(kept)
        claim = {"now": now, "lease": 60.0, "worker": worker, "limit": batch,
                 "queue": "default", "claim": 1}  # fmt: skip
        rows = conn.execute(q["job_claim_queue"], claim).fetchall()
        conn.execute("COMMIT")
        if not rows:
            break
    conn.close()
    return done


def _bare_pg_loop(conninfo: str, schema: str, worker: str, batch: int) -> int:
    """The one statement PostgresStore runs for that cycle (autocommit)."""
    q = {k: v.encode() for k, v in queries.load("postgres").items()}
    # The session settings onceq's own connections use (see PostgresStore).
    conn = psycopg.connect(
        conninfo, autocommit=True, options=f"-c enable_bitmapscan=off -c search_path={schema}"
    )
    done = 0
    rows: list[Any] = []
    while True:
        params = {"lease": 60.0, "worker": worker, "limit": batch, "queue": "default",
                  "claim": 1, "leases": json.dumps([[r[1], r[2]] for r in rows]),
                  "results": json.dumps([None] * len(rows))}  # fmt: skip
        found = conn.execute(q["job_claim_queue"], params).fetchall()
        done += sum(1 for r in found if r[0] == "done")
        rows = [r for r in found if r[0] == "claimed"]
        if not rows:
            break
    conn.close()
    return done


def _timed(target: Any, args_per_process: list[tuple[Any, ...]]) -> float:
    ctx = mp.get_context("spawn")
    with ctx.Pool(len(args_per_process)) as pool:
        pool.apply(time.sleep, (0,))  # the pool's processes are up before the clock starts
        start = time.perf_counter()
        counts = pool.starmap(target, args_per_process)
        elapsed = time.perf_counter() - start
    return sum(counts) / elapsed


def _fresh(backend: str) -> tuple[str, Any]:
    """A fresh store URL and a cleanup function."""
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="onceq-bench-")
        return f"sqlite:///{folder}/bench.db", lambda: None
    schema = f"onceq_bench_{uuid.uuid4().hex[:8]}"

    def drop() -> None:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())

    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}schema={schema}", drop


def run_one(backend: str, mode: str, batch: int, processes: int, jobs: int) -> float:
    url, cleanup = _fresh(backend)
    try:
        store = open_store(url)
        for start in range(0, jobs, 10_000):
            store.job_insert_many([NewJob(task="noop") for _ in range(min(10_000, jobs - start))])
        store.close()
        if mode == "onceq":
            work = [(url, f"w{p}", batch) for p in range(processes)]
            return _timed(_onceq_loop, work)
        if backend == "sqlite":
            path = url.removeprefix("sqlite:///")
            return _timed(_bare_sqlite_loop, [(path, f"w{p}", batch) for p in range(processes)])
        schema = url.rsplit("schema=", 1)[1]
        work = [(PG_URL, schema, f"w{p}", batch) for p in range(processes)]
        return _timed(_bare_pg_loop, work)
    finally:
        cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per run at batch 100")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    results = []
    for backend in args.backends.split(","):
        for batch in (1, 100):
            # Batch 1 is ~100x slower per job: fewer jobs keep the run short.
            jobs = args.jobs if batch == 100 else max(args.jobs // 10, 200)
            for processes in (1, 2):
                bare = run_one(backend, "bare", batch, processes, jobs)
                ours = run_one(backend, "onceq", batch, processes, jobs)
                row = {
                    "backend": backend,
                    "batch": batch,
                    "processes": processes,
                    "jobs": jobs,
                    "onceq_jobs_per_s": round(ours),
                    "bare_jobs_per_s": round(bare),
                    "ratio": round(ours / bare, 3),
                }
                results.append(row)
                if not args.json:
                    print(
                        f"{backend:9} batch {batch:3}  {processes} proc  "
                        f"onceq {ours:9,.0f} jobs/s   bare SQL {bare:9,.0f} jobs/s   "
                        f"ratio {ours / bare:5.2f}",
                        flush=True,
                    )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
